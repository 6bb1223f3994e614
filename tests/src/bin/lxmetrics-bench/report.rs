//! The bench's one table: every target with its measured value, limit and verdict.

use std::time::Duration;

/// Rows in the order they were measured.
#[derive(Default)]
pub struct Report {
    rows: Vec<(String, String, String, bool)>,
}

impl Report {
    /// Adds a target's outcome.
    pub fn row(&mut self, target: &str, measured: String, limit: &str, pass: bool) {
        eprintln!(
            "  {} {target}: {measured} (target {limit})",
            if pass { "PASS" } else { "FAIL" }
        );
        self.rows
            .push((target.to_owned(), measured, limit.to_owned(), pass));
    }

    /// Adds a figure reported without a target.
    pub fn info(&mut self, what: &str, measured: String) {
        eprintln!("  info {what}: {measured}");
        self.rows
            .push((what.to_owned(), measured, "(reported)".to_owned(), true));
    }

    /// Prints the Markdown table; true when every target passed.
    pub fn print(&self, took: Duration) -> bool {
        println!("| target | measured | limit | verdict |");
        println!("|---|---|---|---|");
        for (target, measured, limit, pass) in &self.rows {
            let verdict = match (limit.as_str(), pass) {
                ("(reported)", _) => "",
                (_, true) => "PASS",
                (_, false) => "FAIL",
            };
            println!("| {target} | {measured} | {limit} | {verdict} |");
        }
        let all = self.rows.iter().all(|r| r.3);
        println!();
        println!(
            "bench took {:.0} s; {}",
            took.as_secs_f64(),
            if all {
                "all targets PASS"
            } else {
                "some targets FAIL"
            }
        );
        all
    }
}
