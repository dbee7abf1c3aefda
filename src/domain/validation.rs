//! Turning untrusted JSON into valid domain values, collecting *every* invalid field.
//!
//! serde stops at the first error; API clients want the whole list in one 422, so request
//! bodies are read as a JSON object and each field is taken through [`Fields`].

use super::policy::Role;
use serde::Serialize;
use serde_json::{Map, Value};

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `resources.gpus`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A new field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A request body parsed into a domain value, or every reason it is invalid.
pub trait FromJson: Sized {
    /// Parses `body` (already known to be a JSON object).
    fn from_json(body: &Fields<'_>) -> Result<Self, Vec<FieldError>>;
}

/// The error of a field reader: what was wrong is already recorded on the `Fields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

/// A view of one JSON object that records an error for each field that is missing or of the
/// wrong shape; `finish` then yields the value only if nothing was recorded.
#[derive(Debug)]
pub struct Fields<'a> {
    object: &'a Map<String, Value>,
    prefix: String,
    errors: std::cell::RefCell<Vec<FieldError>>,
}

impl<'a> Fields<'a> {
    /// Wraps a JSON object; `prefix` is prepended to field names in errors.
    pub fn new(object: &'a Map<String, Value>, prefix: &str) -> Self {
        Self {
            object,
            prefix: prefix.to_string(),
            errors: Default::default(),
        }
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// Records an error against `name`.
    pub fn error(&self, name: &str, message: impl Into<String>) {
        self.errors
            .borrow_mut()
            .push(FieldError::new(self.path(name), message));
    }

    /// Appends errors found in a nested object (already prefixed).
    pub fn extend(&self, errors: Vec<FieldError>) {
        self.errors.borrow_mut().extend(errors);
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.object.get(name).filter(|v| !v.is_null())
    }

    /// A field's JSON value when present and not null, for readers of shapes this type has
    /// no reader for (they record their own errors with [`Fields::error`]).
    pub fn value(&self, name: &str) -> Option<&'a Value> {
        self.get(name)
    }

    /// Whether the field is present and not null.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A required string.
    pub fn string(&self, name: &str) -> Option<&'a str> {
        match self.get(name) {
            None => {
                self.error(name, "is required");
                None
            }
            Some(v) => self.as_str(name, v),
        }
    }

    /// An optional string (absent or null is `None` without error).
    pub fn opt_string(&self, name: &str) -> Option<&'a str> {
        self.get(name).and_then(|v| self.as_str(name, v))
    }

    fn as_str(&self, name: &str, v: &'a Value) -> Option<&'a str> {
        match v.as_str() {
            None => {
                self.error(name, "must be a string");
                None
            }
            // PostgreSQL text cannot hold U+0000; refuse it here rather than fail later.
            Some(s) if s.contains('\0') => {
                self.error(name, "must not contain NUL characters");
                None
            }
            Some(s) => Some(s),
        }
    }

    /// An optional integer within `min..=max`; `Err(Invalid)` after recording an error.
    /// An integer is a number without a fractional part, as JSON Schema's `integer` (and so
    /// the OpenAPI document) counts it: `5`, `5.0` and `5e0` are all 5.
    pub fn opt_int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, Invalid> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match whole_number(v) {
                Some(Some(n)) if (min..=max).contains(&n) => Ok(Some(n)),
                Some(_) => {
                    self.error(name, format!("must be between {min} and {max}"));
                    Err(Invalid)
                }
                None => {
                    self.error(name, "must be an integer");
                    Err(Invalid)
                }
            },
        }
    }

    /// A required integer within `min..=max`.
    pub fn int(&self, name: &str, min: i64, max: i64) -> Option<i64> {
        if self.get(name).is_none() {
            self.error(name, "is required");
            return None;
        }
        self.opt_int(name, min, max).ok().flatten()
    }

    /// An optional boolean.
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, Invalid> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => {
                self.error(name, "must be a boolean");
                Err(Invalid)
            }
        }
    }

    /// A required nested object, as its own `Fields` with a longer prefix.
    pub fn object(&self, name: &str) -> Option<Fields<'a>> {
        match self.get(name) {
            None => {
                self.error(name, "is required");
                None
            }
            Some(Value::Object(o)) => Some(Fields::new(o, &self.path(name))),
            Some(_) => {
                self.error(name, "must be an object");
                None
            }
        }
    }

    /// Takes the errors recorded so far.
    pub fn take_errors(&self) -> Vec<FieldError> {
        std::mem::take(&mut self.errors.borrow_mut())
    }

    /// `Ok(value)` when no error was recorded, else every error.
    pub fn finish<T>(&self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        let errors = self.take_errors();
        match value {
            Some(v) if errors.is_empty() => Ok(v),
            _ if errors.is_empty() => Err(vec![FieldError::new(self.path(""), "is invalid")]),
            _ => Err(errors),
        }
    }
}

/// A syntactically plausible e-mail address, kept as given (uniqueness ignores case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Accepts `local@domain.tld`, 3..=254 characters, no whitespace.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let s = s.trim();
        let (local, domain) = s.rsplit_once('@').ok_or("must be an e-mail address")?;
        let ok = s.len() <= 254
            && !local.is_empty()
            && local.len() <= 64
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && !domain.contains('@');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err("must be an e-mail address")
        }
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password of acceptable length (12..=1024 characters; the upper bound caps hashing cost).
/// It serializes as the secret itself, for the request a client sends; `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// Minimum length (docs/api.md, "Authentication").
    pub const MIN_CHARS: usize = 12;
    /// Maximum length.
    pub const MAX_CHARS: usize = 1024;

    /// Checks the length.
    pub fn parse(s: &str) -> Result<Self, String> {
        let n = s.chars().count();
        if n < Self::MIN_CHARS {
            Err(format!("must be at least {} characters", Self::MIN_CHARS))
        } else if n > Self::MAX_CHARS {
            Err(format!("must be at most {} characters", Self::MAX_CHARS))
        } else {
            Ok(Self(s.to_string()))
        }
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A display name: trimmed, 1..=`max` characters, no control characters.
pub fn display_name(s: &str, max: usize) -> Result<String, String> {
    let t = s.trim();
    let n = t.chars().count();
    if n == 0 {
        Err("must not be empty".into())
    } else if n > max {
        Err(format!("must be at most {max} characters"))
    } else if t.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(t.to_string())
    }
}

/// The OpenAPI schemas of the checks above, so that the document says what they enforce
/// (`#[schema(schema_with = …)]` on a request field). Each accepts a subset of what its check
/// accepts, never more: a client generated from the document sends what the server takes.
pub mod schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
    use utoipa::openapi::{Object, Schema};

    use crate::domain::resources::MAX_RESOURCE;

    /// No control character anywhere (`char::is_control`: U+0000–U+001F, U+007F–U+009F).
    const NO_CONTROL: &str = r"[^\x00-\x1f\x7f-\x9f]";

    fn string(min: usize, max: usize, pattern: String, description: &str) -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(min))
            .max_length(Some(max))
            .pattern(Some(pattern))
            .description(Some(description))
            .build()
    }

    /// [`super::display_name`] with at most 100 characters: one visible character at least,
    /// no control characters.
    pub fn display_name() -> Object {
        let c = NO_CONTROL;
        string(
            1,
            100,
            format!(r"^{c}*[^\s\x00-\x1f\x7f-\x9f]{c}*$"),
            "1–100 characters once trimmed, no control characters",
        )
    }

    /// [`super::Email`]: printable ASCII, `local@domain.tld`.
    pub fn email() -> Object {
        // Printable ASCII without '@' (0x40); the domain's labels also without '.' (0x2e).
        let local = r"[\x21-\x3f\x41-\x7e]";
        let label = r"[\x21-\x2d\x2f-\x3f\x41-\x7e]";
        string(
            3,
            254,
            format!(r"^{local}{{1,64}}@{label}+(\.{label}+)+$"),
            "An e-mail address; unique, case-insensitively",
        )
    }

    /// [`crate::domain::deployment::Process`]'s `command`: 1–32 strings of at most 1024
    /// characters, without NUL.
    pub fn command() -> Schema {
        use crate::domain::deployment::{MAX_ARGS, MAX_ARG_CHARS};
        let arg = ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(MAX_ARG_CHARS))
            .pattern(Some(r"^[^\x00]*$"));
        Schema::Array(
            utoipa::openapi::ArrayBuilder::new()
                .items(arg)
                .min_items(Some(1))
                .max_items(Some(MAX_ARGS))
                .description(Some(
                    "Replaces the image's command: the program and its arguments",
                ))
                .build(),
        )
    }

    /// A submission's `depends_on`: at most 32 deployment ids.
    pub fn depends_on() -> Schema {
        use crate::domain::scheduling::dependencies::MAX_DEPENDENCIES;
        let id = ObjectBuilder::new().schema_type(Type::String).format(Some(
            utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Uuid),
        ));
        Schema::Array(
            utoipa::openapi::ArrayBuilder::new()
                .items(id)
                .max_items(Some(MAX_DEPENDENCIES))
                .description(Some(
                    "Deployments of the organization (any of its clusters) that must all \
                     succeed before this one may be admitted",
                ))
                .build(),
        )
    }

    /// [`crate::domain::deployment::Process`]'s `env`: at most 32 variables, names like
    /// `[A-Za-z_][A-Za-z0-9_]*` (at most 64 characters), values at most 1024 characters.
    pub fn env() -> Schema {
        use crate::domain::deployment::{MAX_ENV, MAX_ENV_NAME_CHARS, MAX_ENV_VALUE_CHARS};
        let value = ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(MAX_ENV_VALUE_CHARS))
            .pattern(Some(r"^[^\x00]*$"));
        let name = ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(MAX_ENV_NAME_CHARS))
            .pattern(Some(r"^[A-Za-z_][A-Za-z0-9_]*$"));
        Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(value))
                .property_names(Some(name))
                .max_properties(Some(MAX_ENV))
                .description(Some("Environment variables of the process, name to value"))
                .build(),
        )
    }

    /// One dimension of a requested amount of resources: `min ≤ x < 2^40`.
    fn dimension(min: i64, description: &str) -> Object {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(min))
            // As a float: utoipa keeps integers as `isize`, and 2^40 − 1 wraps to −1 on wasm32.
            .maximum(Some((MAX_RESOURCE - 1) as f64))
            .description(Some(description))
            .build()
    }

    /// A requested capacity or demand (`deployment::resources_field` with
    /// `require_positive`): three integers `0 ≤ x < 2^40`, at least one positive — written as
    /// one alternative per dimension that is positive, each a whole object.
    pub fn requested_resources() -> Schema {
        let dims = [
            ("cpu_millis", "CPU in thousandths of a core"),
            ("memory_mib", "Memory in mebibytes"),
            ("gpus", "Whole GPUs"),
        ];
        let mut alternatives = AnyOfBuilder::new().description(Some(
            "Integers, each 0 ≤ x < 2^40, at least one of them positive",
        ));
        for (positive, _) in dims {
            let mut object = ObjectBuilder::new().schema_type(Type::Object);
            for (name, description) in dims {
                let min = if name == positive { 1 } else { 0 };
                object = object
                    .property(name, dimension(min, description))
                    .required(name);
            }
            alternatives = alternatives.item(object.build());
        }
        Schema::AnyOf(alternatives.build())
    }
}

/// Reads a `role` field of a request body.
pub fn role_field(f: &Fields<'_>, name: &str) -> Option<Role> {
    f.string(name).and_then(|s| {
        let role = Role::parse(s);
        if role.is_none() {
            f.error(name, "must be one of viewer, developer, admin");
        }
        role
    })
}

/// A JSON number without a fractional part: `Some(Some(n))`, or `Some(None)` when it lies
/// beyond `i64` (outside every range); `None` for anything else.
fn whole_number(v: &Value) -> Option<Option<i64>> {
    let Value::Number(n) = v else {
        return None;
    };
    if let Some(i) = n.as_i64() {
        return Some(Some(i));
    }
    if n.is_u64() {
        return Some(None);
    }
    // 2^63 as a double; every whole double in [-2^63, 2^63) converts exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    let f = n.as_f64()?;
    (f.fract() == 0.0).then(|| (-LIMIT..LIMIT).contains(&f).then_some(f as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_are_whole_numbers_in_any_notation() {
        let body = json!({"a": 5.0, "b": 5e0, "c": 5.5, "d": 1e300, "e": -1e300, "f": u64::MAX,
                          "g": "5", "h": -0.0});
        let Value::Object(o) = &body else {
            unreachable!()
        };
        let f = Fields::new(o, "");
        assert_eq!(f.opt_int("a", 0, 10), Ok(Some(5)));
        assert_eq!(f.opt_int("b", 0, 10), Ok(Some(5)));
        assert_eq!(f.opt_int("h", 0, 10), Ok(Some(0)));
        for name in ["c", "d", "e", "f", "g"] {
            assert_eq!(f.opt_int(name, 0, 10), Err(Invalid), "{name}");
        }
        let messages: Vec<_> = f
            .take_errors()
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect();
        let range = "must be between 0 and 10".to_string();
        assert_eq!(
            messages,
            vec![
                ("c".into(), "must be an integer".into()),
                ("d".into(), range.clone()),
                ("e".into(), range.clone()),
                ("f".into(), range),
                ("g".into(), "must be an integer".into()),
            ]
        );
    }

    #[test]
    fn every_invalid_field_is_listed() {
        let v = json!({"a": 1, "n": "x", "o": {"k": -1}});
        let obj = v.as_object().expect("object");
        let f = Fields::new(obj, "");
        assert!(f.string("a").is_none());
        assert!(f.string("missing").is_none());
        assert!(f.int("n", 0, 10).is_none());
        let nul = json!({"s": "a\u{0}b"});
        let g = Fields::new(nul.as_object().expect("object"), "");
        assert!(g.string("s").is_none());
        assert_eq!(
            g.take_errors()[0].message,
            "must not contain NUL characters"
        );
        let o = f.object("o").expect("nested");
        assert!(o.int("k", 0, 10).is_none());
        f.extend(o.take_errors());
        let errors = f.finish::<()>(None).expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["a", "missing", "n", "o.k"]);
    }

    #[test]
    fn emails() {
        assert!(Email::parse("a@b.co").is_ok());
        assert_eq!(Email::parse(" A@B.co ").map(|e| e.0), Ok("A@B.co".into()));
        for bad in ["", "a", "a@b", "@b.co", "a b@c.de", "a@.co", "a@b.co."] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_and_names() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("twelve chars").is_ok());
        assert!(format!("{:?}", Password::parse("twelve chars")).contains("***"));
        assert_eq!(display_name("  Ada ", 100), Ok("Ada".into()));
        assert!(display_name("   ", 100).is_err());
        assert!(display_name(&"x".repeat(101), 100).is_err());
    }
}
