//! Short validated strings: a length in characters and, for names, a set of
//! characters, checked when built or deserialized.

/// Defines a string newtype of `$min..=$max` characters, each accepted by
/// `$allowed` (a `fn(char) -> bool`), with its JSON Schema (`$pattern` is the
/// same rule as a regular expression, or `None`).
macro_rules! bounded_string {
    (
        $(#[doc = $doc:literal])*
        $name:ident, chars: $min:expr, $max:expr, allowed: $allowed:expr, pattern: $pattern:expr,
    ) => {
        $(#[doc = $doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks and wraps the string.
            pub fn new(value: impl Into<String>) -> Result<Self, crate::ids::InvalidValue> {
                let value = value.into();
                crate::bounded::check(&value, $min, $max, $allowed)?;
                Ok(Self(value))
            }

            /// The string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.0, f)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let mut schema = schemars::json_schema!({
                    "description": concat!($($doc, " "),*).trim(),
                    "type": "string",
                    "minLength": $min,
                    "maxLength": $max,
                });
                let pattern: Option<&str> = $pattern;
                if let Some(pattern) = pattern {
                    schema.insert("pattern".into(), pattern.into());
                }
                schema
            }
        }
    };
}

pub(crate) use bounded_string;

/// Checks a length in characters and each character.
pub(crate) fn check(
    value: &str,
    min: usize,
    max: usize,
    allowed: fn(char) -> bool,
) -> Result<(), crate::ids::InvalidValue> {
    let chars = value.chars().count();
    if !(min..=max).contains(&chars) {
        return Err(crate::ids::InvalidValue(format!("has {chars} characters, {min} to {max} are allowed")));
    }
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        return Err(crate::ids::InvalidValue(format!("must not contain {bad:?}")));
    }
    Ok(())
}

/// Any character.
pub(crate) fn any(_: char) -> bool {
    true
}
