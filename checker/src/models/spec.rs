//! Model names as the CLI and the manifest spell them: `cas-register(nil)`, `kv`, `multi-register(0)`, ...

use super::{KvModel, MultiRegisterModel, MutexModel, RegisterModel, SetModel};
use serde_json::Value;
use std::fmt;

/// A model chosen by name, with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSpec {
    /// A read/write register (per key).
    Register(RegisterModel),
    /// A kv map of strings.
    Kv(KvModel),
    /// Transactions over several registers.
    MultiRegister(MultiRegisterModel),
    /// A lock.
    Mutex(MutexModel),
    /// A set with add and read.
    Set(SetModel),
}

/// The names accepted by [`ModelSpec::parse`], for help and error messages.
pub const MODEL_NAMES: &str =
    "register[(init)], cas-register[(init)], kv, kv-single, multi-register[(init)], mutex, set";

impl ModelSpec {
    /// Parses `name` or `name(init)`, where `init` is `nil`, an integer or a string.
    pub fn parse(text: &str) -> Result<ModelSpec, String> {
        let text = text.trim();
        let (name, argument) = match text.split_once('(') {
            Some((name, rest)) => match rest.strip_suffix(')') {
                Some(argument) => (name.trim(), Some(argument.trim())),
                None => return Err(format!("model {text:?}: missing closing parenthesis")),
            },
            None => (text, None),
        };
        let initial = || parse_initial(argument.unwrap_or("nil"));
        let no_argument = |spec: ModelSpec| match argument {
            None => Ok(spec),
            Some(_) => Err(format!("model {name:?} takes no argument")),
        };
        match name {
            "register" => Ok(ModelSpec::Register(RegisterModel {
                initial: initial()?,
                cas: false,
            })),
            "cas-register" => Ok(ModelSpec::Register(RegisterModel {
                initial: initial()?,
                cas: true,
            })),
            "multi-register" => Ok(ModelSpec::MultiRegister(MultiRegisterModel {
                initial: initial()?,
            })),
            "kv" => no_argument(ModelSpec::Kv(KvModel { split_by_key: true })),
            "kv-single" => no_argument(ModelSpec::Kv(KvModel {
                split_by_key: false,
            })),
            "mutex" => no_argument(ModelSpec::Mutex(MutexModel)),
            "set" => no_argument(ModelSpec::Set(SetModel)),
            other => Err(format!(
                "unknown model {other:?}; expected one of: {MODEL_NAMES}"
            )),
        }
    }
}

impl ModelSpec {
    /// The partition the model puts `op` in (P-compositionality), exactly as the check does.
    pub fn partition(&self, op: &crate::ops::Operation) -> super::PartitionKey {
        use super::Model;
        match self {
            ModelSpec::Register(model) => model.partition(op),
            ModelSpec::Kv(model) => model.partition(op),
            ModelSpec::MultiRegister(model) => model.partition(op),
            ModelSpec::Mutex(model) => model.partition(op),
            ModelSpec::Set(model) => model.partition(op),
        }
    }
}

fn parse_initial(text: &str) -> Result<Value, String> {
    if text == "nil" || text == "null" {
        return Ok(Value::Null);
    }
    if let Ok(integer) = text.parse::<i64>() {
        return Ok(Value::from(integer));
    }
    match text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(inner) => Ok(Value::String(inner.to_string())),
        None => Err(format!(
            "initial value {text:?}: expected nil, an integer or a quoted string"
        )),
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use super::Model;
        let name = match self {
            ModelSpec::Register(model) => model.name(),
            ModelSpec::Kv(model) => model.name(),
            ModelSpec::MultiRegister(model) => model.name(),
            ModelSpec::Mutex(model) => model.name(),
            ModelSpec::Set(model) => model.name(),
        };
        f.write_str(&name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_initial_values_parse() {
        assert_eq!(
            ModelSpec::parse("cas-register(0)").unwrap().to_string(),
            "cas-register(0)"
        );
        assert_eq!(
            ModelSpec::parse("cas-register").unwrap().to_string(),
            "cas-register(nil)"
        );
        assert_eq!(
            ModelSpec::parse("register(\"a\")").unwrap().to_string(),
            "register(a)"
        );
        assert_eq!(
            ModelSpec::parse("kv-single").unwrap().to_string(),
            "kv-single"
        );
        assert!(ModelSpec::parse("kv(3)")
            .unwrap_err()
            .contains("takes no argument"));
        assert!(ModelSpec::parse("queue")
            .unwrap_err()
            .contains("unknown model"));
        assert!(ModelSpec::parse("register(x y)")
            .unwrap_err()
            .contains("initial value"));
    }
}
