//! Content negotiation for `Accept` and `Accept-Encoding` (RFC 9110 section 12.5).
//!
//! Headers are parsed, not substring-matched: `Accept-Encoding: gzip;q=0` refuses gzip,
//! and `application/openmetrics-text; version=0.0.1` is not mistaken for a version we do
//! not speak... except that 0.0.1 is the draft of 1.0.0 with the same grammar, so we
//! accept it as Prometheus does.

use super::{ContentEncoding, Format};

/// One element of a comma-separated header list: the value and its parameters.
struct Element<'a> {
    value: &'a str,
    params: Vec<(&'a str, &'a str)>,
}

impl Element<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The q-value in thousandths (RFC 9110 `qvalue`); malformed values count as 0,
    /// which makes the element unacceptable rather than preferred.
    fn quality(&self) -> u16 {
        self.param("q").map_or(1000, parse_qvalue)
    }
}

fn parse_qvalue(q: &str) -> u16 {
    let q = q.trim();
    let (int, frac) = q.split_once('.').unwrap_or((q, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => thousandths,
        "1" if thousandths == 0 => 1000,
        _ => 0,
    }
}

fn elements(header: &str) -> impl Iterator<Item = Element<'_>> {
    header.split(',').filter_map(|part| {
        let mut pieces = part.split(';');
        let value = pieces.next()?.trim();
        if value.is_empty() {
            return None;
        }
        let params = pieces
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k.trim(), v.trim().trim_matches('"')))
            })
            .collect();
        Some(Element { value, params })
    })
}

/// The format a scraper asked for. Without a usable preference (no header, only unknown
/// types), Prometheus text 0.0.4 is served, as every Prometheus exporter does.
pub fn format_from_accept(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::PrometheusText;
    };
    // Highest quality wins; on a tie the more specific range, then the earlier element.
    let mut best: Option<(u16, u8, Format)> = None;
    for element in elements(accept) {
        let (format, specificity) = match media_range_format(&element) {
            Some(found) => found,
            None => continue,
        };
        let q = element.quality();
        if q == 0 {
            continue;
        }
        if best.is_none_or(|(bq, bs, _)| (q, specificity) > (bq, bs)) {
            best = Some((q, specificity, format));
        }
    }
    best.map_or(Format::PrometheusText, |(_, _, f)| f)
}

fn media_range_format(element: &Element<'_>) -> Option<(Format, u8)> {
    let (kind, subtype) = element.value.split_once('/')?;
    let (kind, subtype) = (kind.trim(), subtype.trim());
    if kind.eq_ignore_ascii_case("application") && subtype.eq_ignore_ascii_case("openmetrics-text")
    {
        return match element.param("version") {
            None | Some("1.0.0") | Some("0.0.1") => Some((Format::OpenMetrics, 2)),
            Some(_) => None,
        };
    }
    if kind.eq_ignore_ascii_case("text") && subtype.eq_ignore_ascii_case("plain") {
        return match element.param("version") {
            None | Some("0.0.4") => Some((Format::PrometheusText, 2)),
            Some(_) => None,
        };
    }
    if kind.eq_ignore_ascii_case("text") && subtype == "*" {
        return Some((Format::PrometheusText, 1));
    }
    if kind == "*" && subtype == "*" {
        return Some((Format::PrometheusText, 0));
    }
    None
}

/// Whether to gzip: gzip is used when the header gives it (or `*`) a non-zero quality at
/// least as high as identity's.
pub fn encoding_from_accept_encoding(accept_encoding: Option<&str>) -> ContentEncoding {
    let Some(header) = accept_encoding else {
        return ContentEncoding::Identity;
    };
    let (mut gzip, mut identity, mut star) = (None, None, None);
    for element in elements(header) {
        let q = element.quality();
        let slot = if element.value.eq_ignore_ascii_case("gzip")
            || element.value.eq_ignore_ascii_case("x-gzip")
        {
            &mut gzip
        } else if element.value.eq_ignore_ascii_case("identity") {
            &mut identity
        } else if element.value == "*" {
            &mut star
        } else {
            continue;
        };
        *slot = Some(slot.map_or(q, |old: u16| old.max(q)));
    }
    let gzip_q = gzip.or(star).unwrap_or(0);
    let identity_q = identity.unwrap_or(1);
    if gzip_q > 0 && gzip_q >= identity_q {
        ContentEncoding::Gzip
    } else {
        ContentEncoding::Identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_defaults_to_text() {
        assert_eq!(format_from_accept(None), Format::PrometheusText);
        assert_eq!(format_from_accept(Some("")), Format::PrometheusText);
        assert_eq!(format_from_accept(Some("*/*")), Format::PrometheusText);
        assert_eq!(
            format_from_accept(Some("application/json")),
            Format::PrometheusText
        );
    }

    #[test]
    fn prometheus_scrape_header_picks_openmetrics() {
        let prom = "application/openmetrics-text;version=1.0.0;q=0.5,\
                    application/openmetrics-text;version=0.0.1;q=0.4,\
                    text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(format_from_accept(Some(prom)), Format::OpenMetrics);
        // Prometheus 3 adds an escaping parameter.
        let prom3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
                     text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(format_from_accept(Some(prom3)), Format::OpenMetrics);
    }

    #[test]
    fn q_values_decide() {
        let text_first = "application/openmetrics-text;q=0.3, text/plain;q=0.9";
        assert_eq!(format_from_accept(Some(text_first)), Format::PrometheusText);
        assert_eq!(
            format_from_accept(Some("text/plain;q=0, application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(
            format_from_accept(Some("application/openmetrics-text;q=0")),
            Format::PrometheusText
        );
        // A version we do not speak is ignored.
        assert_eq!(
            format_from_accept(Some("application/openmetrics-text;version=2.0.0")),
            Format::PrometheusText
        );
        // Specificity breaks ties.
        assert_eq!(
            format_from_accept(Some("*/*, application/openmetrics-text")),
            Format::OpenMetrics
        );
    }

    #[test]
    fn qvalue_grammar() {
        assert_eq!(parse_qvalue("1"), 1000);
        assert_eq!(parse_qvalue("1.000"), 1000);
        assert_eq!(parse_qvalue("0.5"), 500);
        assert_eq!(parse_qvalue("0.05"), 50);
        assert_eq!(parse_qvalue("0"), 0);
        assert_eq!(parse_qvalue("1.5"), 0);
        assert_eq!(parse_qvalue("abc"), 0);
        assert_eq!(parse_qvalue("0.1234"), 0);
    }

    #[test]
    fn accept_encoding_is_parsed_not_matched() {
        use ContentEncoding::*;
        assert_eq!(encoding_from_accept_encoding(None), Identity);
        assert_eq!(encoding_from_accept_encoding(Some("gzip")), Gzip);
        assert_eq!(
            encoding_from_accept_encoding(Some("deflate, gzip;q=1.0, *;q=0.5")),
            Gzip
        );
        assert_eq!(encoding_from_accept_encoding(Some("gzip;q=0")), Identity);
        assert_eq!(encoding_from_accept_encoding(Some("GZIP")), Gzip);
        assert_eq!(encoding_from_accept_encoding(Some("x-gzip")), Gzip);
        assert_eq!(encoding_from_accept_encoding(Some("*")), Gzip);
        assert_eq!(encoding_from_accept_encoding(Some("*;q=0")), Identity);
        assert_eq!(encoding_from_accept_encoding(Some("br, deflate")), Identity);
        assert_eq!(encoding_from_accept_encoding(Some("notgzip")), Identity);
        assert_eq!(
            encoding_from_accept_encoding(Some("gzip;q=0.2, identity;q=0.8")),
            Identity
        );
        assert_eq!(encoding_from_accept_encoding(Some("gzip, *;q=0")), Gzip);
    }
}
