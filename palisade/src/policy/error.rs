//! Validation errors of policy files: every error, each with its full path.

use std::fmt;

/// One refused value of a policy file: where it is (`policies.payments.retry.max_attempts`),
/// what is wrong, and, for a value out of range, the value and what is allowed.
///
/// Displayed as `policies.payments.retry.max_attempts: 0 is not allowed (1 to 100)`; a value
/// set by an environment variable says which one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub(crate) path: String,
    pub(crate) message: String,
    pub(crate) value: Option<String>,
    pub(crate) expected: Option<String>,
    pub(crate) env_var: Option<String>,
}

impl PolicyError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            value: None,
            expected: None,
            env_var: None,
        }
    }

    pub(crate) fn out_of_range(path: impl Into<String>, value: String, expected: String) -> Self {
        Self {
            path: path.into(),
            message: format!("{value} is not allowed ({expected})"),
            value: Some(value),
            expected: Some(expected),
            env_var: None,
        }
    }

    pub(crate) fn set_by(mut self, var: Option<&str>) -> Self {
        self.env_var = var.map(str::to_owned);
        self
    }

    /// The full path of the refused value, from the top of the file
    /// (`policies.payments.retry.backoff.delay`); empty for an error of the whole file (its
    /// syntax).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong, in a sentence.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The refused value as written by `Debug`, when a value was out of range.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// What the field allows, when a value was out of range.
    pub fn expected(&self) -> Option<&str> {
        self.expected.as_deref()
    }

    /// The environment variable that set the value, if one did.
    pub fn env_var(&self) -> Option<&str> {
        self.env_var.as_deref()
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(var) = &self.env_var {
            write!(f, " (set by {var})")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

/// Every error of a policy file (or of a reload), not just the first: one line each,
/// grouped by policy and layer.
///
/// ```
/// # #[cfg(feature = "policy")] {
/// use palisade::policy::Policies;
///
/// let errors = Policies::from_toml(r#"
///     [policies.payments.retry]
///     max_attempts = 0
///
///     [policies.payments.timeout]
///     timeout = 250
/// "#).unwrap_err();
/// assert_eq!(errors.len(), 2);
/// assert!(errors.to_string().contains("policies.payments.retry.max_attempts: 0 is not allowed"));
/// assert!(errors.to_string().contains("\"250ms\""), "{errors}");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors {
    errors: Vec<PolicyError>,
}

impl PolicyErrors {
    pub(crate) fn new(errors: Vec<PolicyError>) -> Self {
        debug_assert!(!errors.is_empty());
        Self { errors }
    }

    pub(crate) fn one(error: PolicyError) -> Self {
        Self {
            errors: vec![error],
        }
    }

    /// The errors.
    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.errors.iter()
    }

    /// How many errors.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Always `false`: there is at least one error.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The path of every error, in order.
    pub fn paths(&self) -> Vec<&str> {
        self.errors.iter().map(PolicyError::path).collect()
    }

    /// The errors.
    pub fn into_vec(self) -> Vec<PolicyError> {
        self.errors
    }
}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{n} invalid policy value{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for error in &self.errors {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}
