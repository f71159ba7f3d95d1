//! Which brokers to talk to: `--brokers` > `KEEL_BROKERS` > a profile of the config file
//! (`--profile`, else its `default_profile`) > 127.0.0.1:9092.
//!
//! ```toml
//! default_profile = "local"
//! [profiles.local]
//! brokers = "127.0.0.1:9092"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::CliError;
use crate::Common;

pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    default_profile: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Profile {
    brokers: String,
}

/// The config file's path and whether it was named explicitly ($KEEL_CONFIG).
fn config_path() -> Option<(PathBuf, bool)> {
    if let Some(path) = std::env::var_os("KEEL_CONFIG") {
        return Some((PathBuf::from(path), true));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some((base.join("keel").join("config.toml"), false))
}

fn load() -> Result<Option<(PathBuf, ConfigFile)>, CliError> {
    let Some((path, explicit)) = config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(error) => {
            return Err(CliError::Usage(format!("cannot read the config file {}: {error}", path.display())));
        }
    };
    let file: ConfigFile = toml::from_str(&text)
        .map_err(|error| CliError::Usage(format!("invalid config file {}: {error}", path.display())))?;
    Ok(Some((path, file)))
}

/// The bootstrap list for this invocation.
pub fn brokers(common: &Common) -> Result<Vec<String>, CliError> {
    if let Some(brokers) = &common.brokers {
        return split(brokers, "--brokers");
    }
    let loaded = load()?;
    let wanted = common.profile.clone().or_else(|| loaded.as_ref().and_then(|(_, file)| file.default_profile.clone()));
    let Some(wanted) = wanted else {
        return split(DEFAULT_BROKERS, "the default");
    };
    let Some((path, file)) = loaded else {
        return Err(CliError::Usage(format!(
            "profile {wanted:?} is asked for but there is no config file; create {} or set KEEL_CONFIG",
            config_path().map(|(p, _)| p.display().to_string()).unwrap_or_else(|| "~/.config/keel/config.toml".into())
        )));
    };
    match file.profiles.get(&wanted) {
        Some(profile) => split(&profile.brokers, &format!("profile {wanted:?}")),
        None => Err(CliError::Usage(format!(
            "no profile {wanted:?} in {}; it has: {}",
            path.display(),
            if file.profiles.is_empty() {
                "none".to_string()
            } else {
                file.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        ))),
    }
}

fn split(list: &str, source: &str) -> Result<Vec<String>, CliError> {
    let brokers: Vec<String> = list.split(',').map(str::trim).filter(|b| !b.is_empty()).map(str::to_string).collect();
    if brokers.is_empty() {
        return Err(CliError::Usage(format!("{source} names no broker; give host:port[,host:port...]")));
    }
    for broker in &brokers {
        let port_ok =
            broker.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(CliError::Usage(format!("{source}: {broker:?} is not host:port, e.g. 127.0.0.1:9092")));
        }
    }
    Ok(brokers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_lists() {
        assert_eq!(split("a:1, b:2,", "x").unwrap(), vec!["a:1", "b:2"]);
        assert!(split("", "x").is_err());
        assert!(split("localhost", "x").unwrap_err().to_string().contains("not host:port"));
        assert!(split(":9092", "x").is_err());
    }

    #[test]
    fn profiles_parse() {
        let file: ConfigFile = toml::from_str(
            "default_profile = \"dev\"\n[profiles.dev]\nbrokers = \"127.0.0.1:9092\"\n[profiles.prod]\nbrokers = \"k1:9092,k2:9092\"\n",
        )
        .unwrap();
        assert_eq!(file.default_profile.as_deref(), Some("dev"));
        assert_eq!(file.profiles["prod"].brokers, "k1:9092,k2:9092");
        assert!(toml::from_str::<ConfigFile>("[profiles.x]\nbroker = \"a:1\"\n").is_err());
    }
}
