//! A `kill -9` of the daemon in the middle of a burst of `trust add`: after a restart,
//! every add that was acknowledged (the CLI exited 0) is present and the store opens.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lxmetrics_tests::{lxmetrics, ClientCert, Daemon};

#[test]
fn acknowledged_trust_adds_survive_kill_9() {
    let daemon = Daemon::start(&[]);
    let state = daemon.state_dir.path().to_owned();
    let certs: Vec<_> = (0..40)
        .map(|i| {
            let c = ClientCert::generate(&format!("burst-{i}.local"));
            c.write(&state, &format!("burst-{i}"))
        })
        .collect();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let adder = {
        let acknowledged = acknowledged.clone();
        let state = state.clone();
        std::thread::spawn(move || {
            for cert in certs {
                let out = lxmetrics(&state)
                    .args(["trust", "add"])
                    .arg(&cert)
                    .arg("--type=metrics")
                    .output()
                    .expect("run trust add");
                if out.status.success() {
                    let fingerprint = String::from_utf8(out.stdout).unwrap().trim().to_owned();
                    acknowledged.lock().unwrap().push(fingerprint);
                }
            }
        })
    };
    // Let part of the burst go through the daemon, then kill it mid-burst; the rest of
    // the burst falls back to writing the state directory directly.
    while acknowledged.lock().unwrap().len() < 10 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let state_dir = daemon.kill9();
    adder.join().unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 10);

    let restarted = Daemon::start_in(state_dir, &[]);
    let list = restarted.cli(&["trust", "list", "--format=json"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let present: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["fingerprint"].as_str().unwrap())
        .collect();
    for fingerprint in &acknowledged {
        assert!(
            present.contains(&fingerprint.as_str()),
            "acknowledged {fingerprint} lost"
        );
    }
}
