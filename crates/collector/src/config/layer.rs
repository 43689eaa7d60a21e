//! Where each key's value came from: the file, `CORRAL_*` environment variables and flags are
//! flattened into one map of dotted keys, later layers replacing earlier ones, each value
//! remembering its origin so errors can point at it.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use toml::Value;

use super::{ConfigError, Origin, Overrides};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Str,
    StrList,
    NumList,
    Int,
    Duration,
    Size,
}

/// Every key the configuration knows, in file order.
pub(super) const KEYS: &[(&str, Kind)] = &[
    ("data_dir", Kind::Str),
    ("log_level", Kind::Str),
    ("log_format", Kind::Str),
    ("node.mesos_id", Kind::Str),
    ("node.cluster_id", Kind::Str),
    ("node.hostname", Kind::Str),
    ("node.poll_interval", Kind::Duration),
    ("statsd.listen", Kind::StrList),
    ("statsd.unix_socket", Kind::Str),
    ("statsd.flush_interval", Kind::Duration),
    ("statsd.percentiles", Kind::NumList),
    ("statsd.gauge_sign", Kind::Str),
    ("statsd.container_listen_host", Kind::Str),
    ("statsd.container_port_range", Kind::Str),
    ("statsd.expiry", Kind::Duration),
    ("statsd.receive_threads", Kind::Int),
    ("statsd.receive_buffer", Kind::Size),
    ("statsd.max_series", Kind::Int),
    ("agent.url", Kind::Str),
    ("agent.poll_interval", Kind::Duration),
    ("agent.timeout", Kind::Duration),
    ("agent.basic.username", Kind::Str),
    ("agent.basic.password", Kind::Str),
    ("agent.iam_config", Kind::Str),
    ("agent.ca_certificate", Kind::Str),
    ("api.listen", Kind::Str),
    ("kafka.brokers", Kind::StrList),
    ("kafka.topic_prefix", Kind::Str),
    ("kafka.single_topic", Kind::Str),
    ("kafka.avro_codec", Kind::Str),
    ("kafka.compression", Kind::Str),
    ("kafka.spool_max_bytes", Kind::Size),
];

pub(super) const ENV_PREFIX: &str = "CORRAL_";

pub(super) fn env_var_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

fn known(key: &str) -> Option<(&'static str, Kind)> {
    KEYS.iter().copied().find(|(k, _)| *k == key)
}

/// A table that holds keys, like `statsd` or `agent.basic`.
fn is_section(key: &str) -> bool {
    KEYS.iter()
        .any(|(k, _)| k.len() > key.len() && k.starts_with(key) && k.as_bytes()[key.len()] == b'.')
}

pub(super) struct Entry {
    value: Value,
    origin: Origin,
}

#[derive(Default)]
pub(super) struct Layers {
    entries: HashMap<&'static str, Entry>,
}

impl Layers {
    fn set(&mut self, key: &'static str, value: Value, origin: Origin) {
        self.entries.insert(key, Entry { value, origin });
    }

    pub(super) fn field(&self, key: &'static str) -> Option<Field<'_>> {
        debug_assert!(known(key).is_some(), "{key} is not in KEYS");
        self.entries.get(key).map(|e| Field {
            key,
            value: &e.value,
            origin: &e.origin,
        })
    }

    pub(super) fn add_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            error: e,
        })?;
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: e.to_string().trim_end().to_string(),
                })?;
        self.add_table(&table, "", path)
    }

    fn add_table(
        &mut self,
        table: &toml::Table,
        prefix: &str,
        path: &Path,
    ) -> Result<(), ConfigError> {
        for (name, value) in table {
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            // A quoted key containing a dot would otherwise alias a nested key.
            let plain = !name.contains('.') && !name.is_empty();
            let origin = || Origin::File(path.to_owned());
            if let Some((k, _)) = known(&key).filter(|_| plain) {
                self.set(k, value.clone(), origin());
            } else if plain && is_section(&key) {
                match value {
                    Value::Table(t) => self.add_table(t, &key, path)?,
                    other => {
                        return Err(ConfigError::Invalid {
                            key,
                            origin: origin(),
                            message: format!("expected a table, found {}", describe(other)),
                        })
                    }
                }
            } else {
                return Err(ConfigError::UnknownKey {
                    suggestion: suggest_key(&key),
                    key,
                    origin: origin(),
                });
            }
        }
        Ok(())
    }

    pub(super) fn add_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        // Sorted so that, with several bad variables, the same one is reported every time.
        vars.sort();
        for (name, raw) in vars {
            let Some((key, kind)) = KEYS.iter().copied().find(|(k, _)| env_var_name(k) == name)
            else {
                return Err(ConfigError::UnknownKey {
                    suggestion: suggest_env(&name),
                    key: name.clone(),
                    origin: Origin::Env(name),
                });
            };
            let origin = Origin::Env(name);
            let value = value_from_str(kind, &raw).map_err(|message| ConfigError::Invalid {
                key: key.to_string(),
                origin: origin.clone(),
                message,
            })?;
            self.set(key, value, origin);
        }
        Ok(())
    }

    pub(super) fn add_flags(&mut self, o: &Overrides) {
        let lists = [
            ("--statsd-listen", "statsd.listen", &o.statsd_listen),
            ("--kafka-brokers", "kafka.brokers", &o.kafka_brokers),
        ];
        for (flag, key, values) in lists {
            if let Some(values) = values {
                let items = values
                    .iter()
                    .flat_map(|v| split_list(v))
                    .map(|s| Value::String(s.to_string()))
                    .collect();
                self.set(key, Value::Array(items), Origin::Flag(flag.to_string()));
            }
        }
        let scalars = [
            ("--api-listen", "api.listen", &o.api_listen),
            ("--agent-url", "agent.url", &o.agent_url),
            (
                "--flush-interval",
                "statsd.flush_interval",
                &o.flush_interval,
            ),
            ("--data-dir", "data_dir", &o.data_dir),
            ("--log-level", "log_level", &o.log_level),
        ];
        for (flag, key, value) in scalars {
            if let Some(value) = value {
                self.set(
                    key,
                    Value::String(value.clone()),
                    Origin::Flag(flag.to_string()),
                );
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Turns an environment string into the TOML value the file would hold for that key.
fn value_from_str(kind: Kind, raw: &str) -> Result<Value, String> {
    Ok(match kind {
        Kind::Str | Kind::Duration | Kind::Size => Value::String(raw.to_string()),
        Kind::StrList => Value::Array(
            split_list(raw)
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        Kind::NumList => Value::Array(
            split_list(raw)
                .map(|s| {
                    s.parse::<f64>()
                        .map(Value::Float)
                        .map_err(|_| format!("{s:?} is not a number (expected e.g. \"50,99.9\")"))
                })
                .collect::<Result<_, _>>()?,
        ),
        Kind::Int => {
            let s = raw.trim();
            Value::Integer(
                s.parse::<i64>()
                    .map_err(|_| format!("expected an integer, found {s:?}"))?,
            )
        }
    })
}

/// One key's value with its origin, and typed accessors whose errors name both.
pub(super) struct Field<'a> {
    pub key: &'static str,
    pub value: &'a Value,
    pub origin: &'a Origin,
}

impl Field<'_> {
    pub(super) fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: self.key.to_string(),
            origin: self.origin.clone(),
            message: message.into(),
        }
    }

    fn expected(&self, what: &str) -> ConfigError {
        self.error(format!("expected {what}, found {}", describe(self.value)))
    }

    pub(super) fn string(&self) -> Result<&str, ConfigError> {
        self.value.as_str().ok_or_else(|| self.expected("a string"))
    }

    pub(super) fn strings(&self) -> Result<Vec<&str>, ConfigError> {
        let items = self
            .value
            .as_array()
            .ok_or_else(|| self.expected("a list of strings"))?;
        items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| self.expected("a list of strings")))
            .collect()
    }

    pub(super) fn numbers(&self) -> Result<Vec<f64>, ConfigError> {
        let items = self
            .value
            .as_array()
            .ok_or_else(|| self.expected("a list of numbers"))?;
        items
            .iter()
            .map(|v| match v {
                Value::Integer(i) => Ok(*i as f64),
                Value::Float(f) => Ok(*f),
                _ => Err(self.error(format!(
                    "expected a list of numbers, found an item {}",
                    describe(v)
                ))),
            })
            .collect()
    }

    pub(super) fn uint(&self) -> Result<u64, ConfigError> {
        match self.value {
            Value::Integer(i) if *i >= 0 => Ok(*i as u64),
            Value::Integer(i) => Err(self.error(format!("must not be negative, found {i}"))),
            _ => Err(self.expected("an integer")),
        }
    }

    pub(super) fn duration(&self) -> Result<Duration, ConfigError> {
        let s = self
            .value
            .as_str()
            .ok_or_else(|| self.expected("a duration string like \"10s\""))?;
        humantime::parse_duration(s.trim()).map_err(|e| {
            self.error(format!(
                "invalid duration {s:?} ({e}; write e.g. \"500ms\", \"10s\", \"2m\")"
            ))
        })
    }

    /// A size string like "64MiB", or a plain number of bytes.
    pub(super) fn size(&self) -> Result<u64, ConfigError> {
        match self.value {
            Value::Integer(i) if *i >= 0 => Ok(*i as u64),
            Value::Integer(i) => Err(self.error(format!("must not be negative, found {i}"))),
            Value::String(s) => s
                .trim()
                .parse::<bytesize::ByteSize>()
                .map(|b| b.0)
                .map_err(|_| {
                    self.error(format!(
                        "invalid size {s:?} (write e.g. \"64MiB\", \"1GiB\" or a number of bytes)"
                    ))
                }),
            _ => Err(self.expected("a size like \"64MiB\" or a number of bytes")),
        }
    }
}

pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(i) => format!("integer {i}"),
        Value::Float(f) => format!("number {f}"),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Datetime(d) => format!("date-time {d}"),
        Value::Array(_) => "a list".to_string(),
        Value::Table(_) => "a table".to_string(),
    }
}

fn suggest_key(key: &str) -> Option<String> {
    closest(key, KEYS.iter().map(|(k, _)| k.to_string()))
}

/// The names allowed in the table where `key` was found, e.g. "valid in [api]: listen".
pub(super) fn valid_names_near(key: &str) -> String {
    let (parent, prefix) = match key.rsplit_once('.') {
        Some((parent, _)) => (format!("in [{parent}]"), format!("{parent}.")),
        None => ("at the top level".to_string(), String::new()),
    };
    let mut names: Vec<&str> = Vec::new();
    for (k, _) in KEYS {
        if let Some(rest) = k.strip_prefix(prefix.as_str()) {
            let name = rest.split('.').next().unwrap_or(rest);
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    format!("valid {parent}: {}", names.join(", "))
}

fn suggest_env(name: &str) -> Option<String> {
    closest(name, KEYS.iter().map(|(k, _)| env_var_name(k)))
}

fn closest(wrong: &str, candidates: impl Iterator<Item = String>) -> Option<String> {
    let limit = (wrong.len() / 4).clamp(2, 4);
    candidates
        .map(|c| (edit_distance(wrong, &c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_unique_and_unambiguous() {
        let mut names: Vec<String> = KEYS.iter().map(|(k, _)| env_var_name(k)).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KEYS.len());
    }

    #[test]
    fn sections() {
        assert!(is_section("statsd"));
        assert!(is_section("agent.basic"));
        assert!(!is_section("stats"));
        assert!(!is_section("statsd.listen"));
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest_key("statsd.flush_intervall").as_deref(),
            Some("statsd.flush_interval")
        );
        assert_eq!(
            suggest_env("CORRAL_API_LISTN").as_deref(),
            Some("CORRAL_API_LISTEN")
        );
        assert_eq!(suggest_key("completely.different"), None);
        assert_eq!(valid_names_near("api.address"), "valid in [api]: listen");
        assert_eq!(
            valid_names_near("metrics"),
            "valid at the top level: data_dir, log_level, log_format, node, statsd, agent, api, kafka"
        );
        assert_eq!(
            valid_names_near("agent.basic.token"),
            "valid in [agent.basic]: username, password"
        );
    }

    #[test]
    fn flags_layer() {
        let mut l = Layers::default();
        l.add_flags(&Overrides {
            kafka_brokers: Some(vec!["a:1,b:2".into(), " c:3 ".into()]),
            ..Overrides::default()
        });
        assert_eq!(l.len(), 1);
        let f = l.field("kafka.brokers").unwrap();
        assert_eq!(f.strings().unwrap(), ["a:1", "b:2", "c:3"]);
        assert_eq!(f.origin, &Origin::Flag("--kafka-brokers".into()));
    }
}
