//! Scraping a node's HTTP endpoint with a real HTTP client (ureq), and a strict parser of the
//! Prometheus text format (version 0.0.4) that refuses what Prometheus would refuse: a
//! sample before its `# TYPE`, a family typed twice, a duplicate series, a malformed name,
//! label or value, a histogram whose buckets are not cumulative or whose `+Inf` bucket is not
//! its count.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long one HTTP exchange may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET http://{addr}{path}` with ureq (on a blocking thread), whatever the status.
pub async fn http_get(addr: &str, path: &str) -> HttpAnswer {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .build()
            .into();
        let mut answer = agent
            .get(&url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let content_type = answer
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = answer
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
        HttpAnswer {
            status: answer.status().as_u16(),
            content_type,
            body,
        }
    })
    .await
    .expect("the HTTP thread")
}

/// Scrapes `/metrics` at `addr` and parses it (panics on anything malformed).
pub async fn scrape(addr: &str) -> Scrape {
    let answer = http_get(addr, "/metrics").await;
    assert_eq!(answer.status, 200, "GET /metrics at {addr}: {answer:?}");
    assert_eq!(
        answer.content_type, "text/plain; version=0.0.4; charset=utf-8",
        "the Prometheus text format"
    );
    Scrape::parse(&answer.body)
        .unwrap_or_else(|e| panic!("/metrics at {addr}: {e}\n{}", answer.body))
}

/// A series' labels: (name, value), sorted by name.
pub type Labels = Vec<(String, String)>;

/// One series: a sample name and its labels.
pub type Series = (String, Labels);

/// A parsed exposition.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Family name -> type.
    pub types: BTreeMap<String, String>,
    /// Every sample.
    pub samples: BTreeMap<Series, f64>,
}

impl Scrape {
    /// Parses the text format; an error names the line and what is wrong with it.
    pub fn parse(text: &str) -> Result<Scrape, String> {
        let mut scrape = Scrape::default();
        let mut helped = BTreeSet::new();
        for (number, line) in text.lines().enumerate() {
            let at = |why: String| format!("line {}: {why}: {line:?}", number + 1);
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                scrape.comment(comment, &mut helped).map_err(at)?;
            } else {
                scrape.sample(line).map_err(at)?;
            }
        }
        scrape.check_histograms()?;
        Ok(scrape)
    }

    fn comment(&mut self, comment: &str, helped: &mut BTreeSet<String>) -> Result<(), String> {
        let mut words = comment.trim_start().splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("HELP"), Some(name), _) => {
                check_metric_name(name)?;
                if !helped.insert(name.to_string()) {
                    return Err("a second HELP".into());
                }
            }
            (Some("TYPE"), Some(name), Some(kind)) => {
                check_metric_name(name)?;
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(format!("unknown type {kind}"));
                }
                if self
                    .samples
                    .keys()
                    .any(|(n, _)| family_of(n, &self.types) == Some(name))
                {
                    return Err("TYPE after samples of the family".into());
                }
                if self.types.insert(name.into(), kind.into()).is_some() {
                    return Err("a second TYPE".into());
                }
            }
            (Some("TYPE" | "HELP"), ..) => return Err("incomplete".into()),
            _ => {} // Any other comment.
        }
        Ok(())
    }

    fn sample(&mut self, line: &str) -> Result<(), String> {
        let name_end = line.find(['{', ' ']).ok_or("no value")?;
        let name = &line[..name_end];
        check_metric_name(name)?;
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(after) => parse_labels(after)?,
            None => (Vec::new(), &line[name_end..]),
        };
        let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().ok_or("no value")?)?;
        if let Some(timestamp) = fields.next() {
            timestamp
                .parse::<i64>()
                .map_err(|_| format!("bad timestamp {timestamp}"))?;
        }
        if fields.next().is_some() {
            return Err("trailing fields".into());
        }
        let Some(family) = family_of(name, &self.types) else {
            return Err(format!("sample {name} before its TYPE"));
        };
        if self.types[family] == "counter" && (value < 0.0 || value.is_nan()) {
            return Err("a negative counter".into());
        }
        let mut sorted = labels.clone();
        sorted.sort();
        if sorted.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err("a label given twice".into());
        }
        if self.samples.insert((name.into(), sorted), value).is_some() {
            return Err("a duplicate series".into());
        }
        Ok(())
    }

    /// Histograms: `le` on every bucket, buckets cumulative, `+Inf` equal to `_count`.
    fn check_histograms(&self) -> Result<(), String> {
        for (family, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            let bucket = format!("{family}_bucket");
            let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
            for ((name, labels), value) in &self.samples {
                if *name != bucket {
                    continue;
                }
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .ok_or("a bucket without le")?;
                let bound = parse_value(&le.1)?;
                let others = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
                series.entry(others).or_default().push((bound, *value));
            }
            for (labels, mut buckets) in series {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                    return Err(format!("{family}{labels:?}: buckets not cumulative"));
                }
                let last = buckets.last().ok_or("no buckets")?;
                let count = self
                    .samples
                    .get(&(format!("{family}_count"), labels.clone()));
                if last.0 != f64::INFINITY || Some(&last.1) != count {
                    return Err(format!("{family}{labels:?}: +Inf bucket is not the count"));
                }
                if !self
                    .samples
                    .contains_key(&(format!("{family}_sum"), labels.clone()))
                {
                    return Err(format!("{family}{labels:?}: no sum"));
                }
            }
        }
        Ok(())
    }

    /// The value of the series `name{labels}`, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        self.samples.get(&(name.to_string(), labels)).copied()
    }

    /// The value of `name{labels}`; panics if it is absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
    }

    /// The sum of every series named `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }

    /// The label values of `label` among the series named `name`.
    pub fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples
            .keys()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, labels)| labels.iter().filter(|(k, _)| k == label))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// The family a sample name belongs to: itself, or a histogram's or summary's family for
/// the `_bucket`, `_sum` and `_count` samples.
fn family_of<'a>(name: &'a str, types: &'a BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let family = name.strip_suffix(suffix)?;
        let (family, kind) = types.get_key_value(family)?;
        (kind == "histogram" || (kind == "summary" && *suffix != "_bucket"))
            .then_some(family.as_str())
    })
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!("bad label name {name:?}"))
    }
}

/// Parses `name="value",...}` (after the opening brace); the labels and what follows.
fn parse_labels(mut text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        if let Some(rest) = text.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let (name, rest) = text.split_once("=\"").ok_or("a label without =\"")?;
        check_label_name(name)?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("an unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("a dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => return Err(format!("bad escape \\{other}")),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        text = &rest[end + 1..];
        if let Some(after_comma) = text.strip_prefix(',') {
            text = after_comma;
        } else if !text.starts_with('}') {
            return Err("labels not separated by commas".into());
        }
    }
}

/// A sample value as Go's `ParseFloat` reads it: decimal or exponent notation, `+Inf`,
/// `-Inf`, `NaN`.
fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if text
            .chars()
            .all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) =>
        {
            text.parse().map_err(|_| format!("bad value {text}"))
        }
        _ => Err(format!("bad value {text}")),
    }
}
