//! The rules for single values (names, sizes, policies), each a plain function from what the
//! file says to the value or to a message saying what would be valid.

use std::collections::HashMap;
use std::time::Duration;

use toml::de::DeInteger;

use super::hints::suggest_name;
use super::{MAX_CPU, MAX_DELAY, MAX_INSTANCES, MAX_NAME_LEN, MIN_DELAY, MIN_MEMORY, int_value, quote};
use crate::job::{Driver, JobKind, Network, RestartPolicy};
use crate::units::{format_duration, format_memory, parse_duration};

const NAME_RULE: &str = "a name is 1 to 63 lowercase letters (a-z), digits and '-', starting \
                         with a letter and not ending in '-'";
const PORT_NAME_RULE: &str = "a port name is 1 to 63 lowercase letters (a-z), digits and '-'";
const ENV_RULE: &str =
    "a variable name is letters, digits and '_', not starting with a digit, e.g. \"RUST_LOG\"";

pub(super) fn job_name(s: &str) -> Result<String, String> {
    match job_name_problem(s) {
        None => Ok(s.to_owned()),
        Some(why) => Err(format!(
            "{} {why}; {NAME_RULE}, e.g. {:?}",
            quote(s),
            suggest_name(s)
        )),
    }
}

pub(super) fn job_kind(s: &str) -> Result<JobKind, String> {
    match s {
        "service" => Ok(JobKind::Service),
        "batch" => Ok(JobKind::Batch),
        _ => Err(format!(
            "{} is not a job kind; use \"service\" or \"batch\"",
            quote(s)
        )),
    }
}

/// `n` instances for a job of `kind` (`None` when the kind is itself invalid).
pub(super) fn instances_for(kind: Option<JobKind>, n: u32) -> Result<u32, String> {
    if n == 0 && kind == Some(JobKind::Batch) {
        return Err(format!(
            "a batch job runs at least 1 instance; use 1 to {MAX_INSTANCES} (0 is for scaling a \
             service down)"
        ));
    }
    Ok(n)
}

/// Argument `index` of the command.
pub(super) fn argument(index: usize, s: &str) -> Result<String, String> {
    if let Some(at) = s.chars().position(|c| c == '\0') {
        return Err(format!(
            "contains a NUL character at character {}; a process cannot receive NUL in its \
             arguments, so remove it",
            at + 1
        ));
    }
    if index == 0 && s.trim().is_empty() {
        let message = "the program is empty; name an executable, e.g. \"/bin/sh\" or \"./server\"";
        return Err(message.to_owned());
    }
    Ok(s.to_owned())
}

pub(super) fn env_name(name: &str) -> Result<(), String> {
    if let Some(why) = env_name_problem(name) {
        Err(format!("{} {why}; {ENV_RULE}", quote(name)))
    } else if name == "PORT" {
        Err(
            "PORT is set by the agent to the job's first port; remove it and read $PORT in the \
             command instead"
                .to_owned(),
        )
    } else if name.starts_with("PORT_") {
        Err(format!(
            "{name} is reserved: the agent sets PORT_<NAME> for each [[ports]] entry; rename the \
             variable"
        ))
    } else {
        Ok(())
    }
}

pub(super) fn env_value(s: &str) -> Result<String, String> {
    if s.contains('\0') {
        let message = "contains a NUL character; environment values cannot hold NUL, so remove it";
        return Err(message.to_owned());
    }
    Ok(s.to_owned())
}

/// `cores` when it is a valid CPU request; `written` is the value as the file spells it.
pub(super) fn cores_in_range(cores: f64, written: &str) -> Result<f64, String> {
    let why = if cores.is_nan() {
        "is not a number"
    } else if cores <= 0.0 {
        "is not above 0"
    } else if cores > MAX_CPU {
        "is more than the maximum of 1024"
    } else {
        return Ok(cores);
    };
    Err(format!(
        "{written} {why}; use a number of cores above 0 and at most 1024, e.g. 0.5 or 2"
    ))
}

/// `bytes` when it meets the minimum; `bare` says the file gave a plain integer.
pub(super) fn memory_at_least_min(bytes: u64, bare: bool) -> Result<u64, String> {
    if bytes >= MIN_MEMORY {
        return Ok(bytes);
    }
    let min = format_memory(MIN_MEMORY);
    let mut message = format!(
        "{} is less than the minimum of {min}; ask for at least \"{min}\"",
        format_memory(bytes)
    );
    // `memory = 512` usually means 512MiB.
    if bare && bytes < 1 << 20 {
        message += &format!(" (a bare integer counts bytes; write \"{bytes}MiB\" for mebibytes)");
    }
    Err(message)
}

pub(super) fn restart_policy(s: &str) -> Result<RestartPolicy, String> {
    match s {
        "always" => Ok(RestartPolicy::Always),
        "on-failure" => Ok(RestartPolicy::OnFailure),
        "never" => Ok(RestartPolicy::Never),
        _ => Err(format!(
            "{} is not a restart policy; use \"always\", \"on-failure\" or \"never\"",
            quote(s)
        )),
    }
}

pub(super) fn network(s: &str) -> Result<Network, String> {
    match s {
        "host" => Ok(Network::Host),
        "none" => Ok(Network::None),
        _ => Err(format!(
            "{} is not a network; use \"host\" (the node's network) or \"none\" (loopback only)",
            quote(s)
        )),
    }
}

pub(super) fn driver(s: &str) -> Result<Driver, String> {
    match s {
        "sandbox" => Ok(Driver::Sandbox),
        "process" => Ok(Driver::Process),
        _ => Err(format!(
            "{} is not a driver; use \"sandbox\" (isolated, the default) or \"process\" (a plain \
             process, for trusted jobs)",
            quote(s)
        )),
    }
}

pub(super) fn restart_delay(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s).map_err(|e| e.to_string())?;
    if (MIN_DELAY..=MAX_DELAY).contains(&d) {
        return Ok(d);
    }
    let (min, max) = (format_duration(MIN_DELAY), format_duration(MAX_DELAY));
    Err(format!(
        "{} is outside {min:?}..={max:?}; use a delay from {min} to {max}, e.g. \"1s\"",
        quote(s)
    ))
}

/// A port's name, unless it is invalid or already in `seen`.
pub(super) fn port_name(name: &str, seen: &HashMap<String, usize>) -> Result<String, String> {
    if let Some(why) = port_name_problem(name) {
        return Err(format!("{} {why}; {PORT_NAME_RULE}, e.g. \"http\"", quote(name)));
    }
    if let Some(first) = seen.get(name) {
        return Err(format!(
            "{} is already the name of ports[{first}]; port names are unique within a job",
            quote(name)
        ));
    }
    Ok(name.to_owned())
}

/// Why a job name is invalid, or `None` when it is fine.
fn job_name_problem(name: &str) -> Option<String> {
    if let Some(why) = port_name_problem(name) {
        return Some(why);
    }
    match name.chars().next() {
        Some(c) if !c.is_ascii_lowercase() => Some(format!("starts with {c:?}")),
        _ if name.ends_with('-') => Some("ends with '-'".to_owned()),
        _ => None,
    }
}

/// Why a port name is invalid (also the job name's character and length rules).
fn port_name_problem(name: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let len = name.chars().count();
    if name.is_empty() {
        Some("is empty".to_owned())
    } else if let Some((i, c)) = name.chars().enumerate().find(|&(_, c)| !allowed(c)) {
        Some(format!("has {c:?} at character {}", i + 1))
    } else if len > MAX_NAME_LEN {
        Some(format!("is {len} characters long"))
    } else {
        None
    }
}

/// Why an environment variable name is invalid, or `None` when it is fine.
fn env_name_problem(name: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_';
    match name.chars().next() {
        None => Some("is empty".to_owned()),
        Some(c) if c.is_ascii_digit() => Some(format!("starts with the digit {c:?}")),
        _ => {
            let (i, c) = name.chars().enumerate().find(|&(_, c)| !allowed(c))?;
            Some(format!("has {c:?} at character {}", i + 1))
        }
    }
}

/// A TOML integer as bytes.
pub(super) fn integer_bytes(i: &DeInteger<'_>) -> Result<u64, String> {
    let use_forms = "use a size with a unit, e.g. \"128MiB\"";
    match int_value(i) {
        Some(n) if n < 0 => Err(format!("{n} is negative; {use_forms}")),
        Some(n) => u64::try_from(n).map_err(|_| format!("{n} bytes is too large; {use_forms}")),
        None if i.as_str().starts_with('-') => Err(format!("{} is negative; {use_forms}", i.as_str())),
        None => Err(format!("{} bytes is too large; {use_forms}", i.as_str())),
    }
}
