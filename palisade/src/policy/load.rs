//! Loading policies files: parse to a document, apply environment overrides, validate every
//! layer, collecting every error with its full path.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{LAYERS, Policies, Policy, PolicyError, PolicyErrors};

/// The prefix of environment overrides: `PALISADE__<POLICY>__<LAYER>__<FIELD>`.
pub const ENV_PREFIX: &str = "PALISADE__";

/// The format of a policies file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// TOML (`.toml`).
    Toml,
    /// JSON (`.json`).
    Json,
    /// YAML (`.yaml`, `.yml`; feature `yaml`).
    #[cfg(feature = "yaml")]
    Yaml,
}

impl Format {
    /// The format of a file, by its extension.
    pub fn from_path(path: &std::path::Path) -> Result<Self, PolicyErrors> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        match ext.as_str() {
            "toml" => Ok(Format::Toml),
            "json" => Ok(Format::Json),
            #[cfg(feature = "yaml")]
            "yaml" | "yml" => Ok(Format::Yaml),
            _ => Err(PolicyErrors::one(PolicyError::new(
                "",
                format!(
                    "cannot tell the format of {} from its extension; expected {}",
                    path.display(),
                    if cfg!(feature = "yaml") {
                        ".toml, .json, .yaml or .yml"
                    } else {
                        ".toml or .json (YAML needs the `yaml` feature)"
                    }
                ),
            ))),
        }
    }
}

/// Parse `text` into a document (syntax errors only).
pub(super) fn parse(format: Format, text: &str) -> Result<Value, PolicyErrors> {
    let parsed = match format {
        Format::Toml => toml::from_str::<Value>(text).map_err(|e| format!("invalid TOML: {e}")),
        Format::Json => {
            serde_json::from_str::<Value>(text).map_err(|e| format!("invalid JSON: {e}"))
        }
        #[cfg(feature = "yaml")]
        Format::Yaml => {
            yaml_serde::from_str::<Value>(text).map_err(|e| format!("invalid YAML: {e}"))
        }
    };
    parsed.map_err(|message| PolicyErrors::one(PolicyError::new("", message.trim_end())))
}

/// Validate a whole document (after applying the overrides among `env`).
pub(super) fn policies<K, V>(
    mut document: Value,
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<Policies, PolicyErrors>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut errors = Vec::new();
    // An empty document (an empty TOML or YAML file) has no policies yet.
    if document.is_null() {
        document = Value::Object(Map::new());
    }
    let Value::Object(top) = &mut document else {
        return Err(PolicyErrors::one(PolicyError::new(
            "",
            "expected a table with one key, `policies`",
        )));
    };
    for key in top.keys() {
        if key != "policies" {
            errors.push(PolicyError::new(
                key.clone(),
                "unknown key; a policies file has one table, `policies`",
            ));
        }
    }
    let all = top
        .entry("policies")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(all) = all else {
        errors.push(PolicyError::new(
            "policies",
            "expected a table of policies by name",
        ));
        return Err(PolicyErrors::new(errors));
    };

    let origins = apply_env(all, env, &mut errors);

    let mut policies = Policies::new();
    for (name, table) in all.iter() {
        let path = format!("policies.{name}");
        if name.is_empty() {
            errors.push(PolicyError::new(path, "a policy needs a non-empty name"));
            continue;
        }
        let Value::Object(layers) = table else {
            errors.push(PolicyError::new(
                path,
                format!("expected a table of layers ({})", LAYERS.join(", ")),
            ));
            continue;
        };
        let mut policy = Policy::new(name.clone());
        let mut ok = true;
        for (slot, value) in layers {
            let path = format!("{path}.{slot}");
            let layer_name = if slot == "attempt_timeout" {
                format!("{name}-attempt")
            } else {
                name.clone()
            };
            let cx = Layer {
                path: &path,
                name: &layer_name,
                origins: &origins,
            };
            let before = errors.len();
            match slot.as_str() {
                "timeout" => policy.timeout = cx.parse(value, &mut errors),
                "retry" => policy.retry = cx.parse(value, &mut errors),
                "circuit_breaker" => policy.circuit_breaker = cx.parse(value, &mut errors),
                "rate_limit" => policy.rate_limit = cx.parse(value, &mut errors),
                "concurrency_limit" => policy.concurrency_limit = cx.parse(value, &mut errors),
                "adaptive_limit" => policy.adaptive_limit = cx.parse(value, &mut errors),
                "attempt_timeout" => policy.attempt_timeout = cx.parse(value, &mut errors),
                _ => errors.push(
                    PolicyError::new(
                        path.clone(),
                        format!("unknown layer; expected one of {}", LAYERS.join(", ")),
                    )
                    .set_by(origins.get(&path).map(String::as_str)),
                ),
            }
            ok &= errors.len() == before;
        }
        if ok {
            policies.insert(policy);
        }
    }
    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(PolicyErrors::new(errors))
    }
}

/// Apply the `PALISADE__…` overrides to the policies table; returns which variable set
/// which path.
fn apply_env<K, V>(
    all: &mut Map<String, Value>,
    env: impl IntoIterator<Item = (K, V)>,
    errors: &mut Vec<PolicyError>,
) -> BTreeMap<String, String>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut origins = BTreeMap::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.as_ref().starts_with(ENV_PREFIX))
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect();
    vars.sort();
    for (key, raw) in vars {
        let rest = &key[ENV_PREFIX.len()..];
        let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if segments.len() < 3 || segments.iter().any(String::is_empty) {
            errors.push(PolicyError::new(
                "",
                format!("{key}: expected {ENV_PREFIX}<POLICY>__<LAYER>__<FIELD>"),
            ));
            continue;
        }
        let normalize = |s: &str| s.to_ascii_lowercase().replace('-', "_");
        let Some(policy) = all
            .keys()
            .find(|name| normalize(name) == segments[0])
            .cloned()
        else {
            errors.push(
                PolicyError::new(
                    format!("policies.{}", segments[0]),
                    "no policy of that name in the file (an override changes a policy the file defines)",
                )
                .set_by(Some(&key)),
            );
            continue;
        };
        let mut path = format!("policies.{policy}");
        let mut node = all.get_mut(&policy).expect("found above");
        let (last, parents) = segments[1..].split_last().expect("at least two segments");
        let mut table = true;
        for segment in parents {
            let Value::Object(map) = node else {
                table = false;
                break;
            };
            path = format!("{path}.{segment}");
            node = map
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        let (true, Value::Object(map)) = (table, node) else {
            errors.push(
                PolicyError::new(path, "not a table, so it has no fields to override")
                    .set_by(Some(&key)),
            );
            continue;
        };
        path = format!("{path}.{last}");
        let value = serde_json::from_str::<Value>(&raw).unwrap_or(Value::String(raw));
        map.insert(last.clone(), value);
        origins.insert(path, key);
    }
    origins
}

/// Where a layer's table is, and what fills its defaults.
struct Layer<'a> {
    path: &'a str,
    /// The layer name when the table has none.
    name: &'a str,
    origins: &'a BTreeMap<String, String>,
}

impl Layer<'_> {
    /// Deserialize (and so validate) one layer's table, collecting every refused value: on
    /// an error, the offending key is reported, set aside (the config's default takes its
    /// place) and the rest is tried again, until the table passes or an error is left that
    /// no key of the table explains.
    fn parse<T: DeserializeOwned>(
        &self,
        value: &Value,
        errors: &mut Vec<PolicyError>,
    ) -> Option<T> {
        let Value::Object(table) = value else {
            errors.push(self.error("", "expected a table of settings".to_owned()));
            return None;
        };
        let mut current = table.clone();
        if !current.contains_key("name") {
            current.insert("name".to_owned(), Value::String(self.name.to_owned()));
        }
        let mut reported = 0;
        for _ in 0..=table.len() + 1 {
            let error =
                match serde_path_to_error::deserialize::<_, T>(&Value::Object(current.clone())) {
                    Ok(config) => return (reported == 0).then_some(config),
                    Err(e) => e,
                };
            let (relative, error) = self.describe(&error, &current);
            let key = relative.split('.').next().unwrap_or_default().to_owned();
            let present = !key.is_empty() && current.contains_key(&key);
            if present || reported == 0 {
                errors.push(error);
                reported += 1;
            }
            if !present {
                return None;
            }
            current.remove(&key);
        }
        None
    }

    /// The error's path below the layer and the error to report.
    fn describe(
        &self,
        error: &serde_path_to_error::Error<serde_json::Error>,
        table: &Map<String, Value>,
    ) -> (String, PolicyError) {
        let segments: Vec<String> = error
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let serde_path = segments.join(".");
        let message = error.inner().to_string();
        let message = strip_position(&message);
        if let Some((field, value, expected)) = config_error(message) {
            // A layer's own validation names the field (`budget.ratio`); the serde path
            // says where in the table it was raised.
            let mut relative = match segments.first() {
                Some(first) if !field.starts_with(first.as_str()) => {
                    format!("{serde_path}.{field}")
                }
                _ => field.to_owned(),
            };
            // A field of a nested table named without its parent (`aimd.backoff_ratio` in
            // `algorithm`): find the parent.
            let head = relative.split('.').next().unwrap_or_default();
            if !table.contains_key(head)
                && let Some(parent) = table
                    .iter()
                    .find(|(_, v)| v.as_object().is_some_and(|m| m.contains_key(head)))
                    .map(|(k, _)| k)
            {
                relative = format!("{parent}.{relative}");
            }
            let full = self.full(&relative);
            let error =
                PolicyError::out_of_range(full.clone(), value.to_owned(), expected.to_owned())
                    .set_by(self.origin(&full));
            return (relative, error);
        }
        let mut relative = serde_path;
        if let Some(unknown) = unknown_field(message)
            && !relative.ends_with(unknown)
        {
            relative = if relative.is_empty() {
                unknown.to_owned()
            } else {
                format!("{relative}.{unknown}")
            };
        }
        let err = self.error(&relative, message.to_owned());
        (relative, err)
    }

    fn full(&self, relative: &str) -> String {
        if relative.is_empty() {
            self.path.to_owned()
        } else {
            format!("{}.{relative}", self.path)
        }
    }

    /// The variable that set `full` or one of its parents.
    fn origin(&self, full: &str) -> Option<&str> {
        self.origins
            .iter()
            .find(|(path, _)| {
                full == path.as_str()
                    || full.starts_with(&format!("{path}."))
                    || path.starts_with(&format!("{full}."))
            })
            .map(|(_, var)| var.as_str())
    }

    fn error(&self, relative: &str, message: String) -> PolicyError {
        let full = self.full(relative);
        let var = self.origin(&full).map(str::to_owned);
        PolicyError::new(full, message).set_by(var.as_deref())
    }
}

/// `invalid <layer> config: <field> = <value>; expected <expected>`, as
/// `palisade_core::ConfigError` writes it: the field, the value and what is allowed.
fn config_error(message: &str) -> Option<(&str, &str, &str)> {
    let rest = message.strip_prefix("invalid ")?;
    let (_, rest) = rest.split_once(" config: ")?;
    let (field, rest) = rest.split_once(" = ")?;
    let (value, expected) = rest.split_once("; expected ")?;
    Some((field, value, expected))
}

/// The key of serde's `unknown field `x`, expected …`.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(key, _)| key)
}

/// serde_json's `… at line 1 column 2` means nothing for a document built in memory.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => &message[..i],
        _ => message,
    }
}
