//! Images for tasks: pulled into the agent's cache, then turned into what the sandbox needs
//! (layers, working directory, user) and what the task runs (entrypoint, cmd, environment).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use paved_image::{Image, ImageStore, RegistryAuth};
use paved_runtime::ImageRoot;

/// What a job's image contributes to a task.
pub(crate) struct TaskImage {
    pub(crate) root: ImageRoot,
    /// Entrypoint then cmd: the command when the manifest gives none.
    pub(crate) command: Vec<String>,
    /// The image's environment; the job's own variables override it.
    pub(crate) env: BTreeMap<String, String>,
    /// The image's `USER`, resolved; `None` for root or none, which run as the task's own uid.
    pub(crate) user: Option<(u32, u32)>,
}

/// The file, in the agent's data directory, that holds credentials for private registries:
///
/// ```toml
/// [[registry]]
/// host = "registry.example:5000"
/// username = "ci"
/// password = "..."
/// ```
/// Read at every pull, so a change needs no restart. Keep it mode 0600.
pub const REGISTRIES_FILE: &str = "registries.toml";

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Registries {
    #[serde(default)]
    registry: Vec<RegistryCredentials>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryCredentials {
    host: String,
    username: String,
    password: String,
}

/// Pulls `reference` into the image cache under `data/images` (with the credentials
/// `data/registries.toml` has for its registry, else anonymously), or imports it from a local
/// OCI layout (`oci:/path[:tag]`), and resolves its config.
pub(crate) async fn pull(data: &Path, reference: &str) -> Result<TaskImage, String> {
    let store = ImageStore::open(data.join("images")).map_err(|e| e.to_string())?;
    let image = match reference.strip_prefix("oci:") {
        Some(layout) => {
            let (path, tag) = split_layout(layout);
            store.import_layout(Path::new(path), tag).await
        }
        None => {
            let auth = credentials(&data.join(REGISTRIES_FILE), reference)?;
            store.pull(reference, &auth).await
        }
    };
    task_image(image.map_err(|e| e.to_string())?)
}

/// The credentials `file` holds for the registry of `reference`; anonymous when it has none or
/// does not exist.
fn credentials(file: &Path, reference: &str) -> Result<RegistryAuth, String> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let registries: Registries = toml::from_str(&text).map_err(|e| {
        format!(
            "{} is not valid: {e}; it holds [[registry]] tables with host, username and password",
            file.display()
        )
    })?;
    let host = reference.split('/').next().unwrap_or_default();
    Ok(registries
        .registry
        .into_iter()
        .find(|r| r.host == host)
        .map_or(RegistryAuth::Anonymous, |r| RegistryAuth::Basic {
            username: r.username,
            password: r.password,
        }))
}

/// `/path/to/layout:tag` into the path and the tag; a `:` inside the path is not a tag.
fn split_layout(layout: &str) -> (&str, Option<&str>) {
    match layout.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') && !tag.is_empty() => (path, Some(tag)),
        _ => (layout, None),
    }
}

fn task_image(image: Image) -> Result<TaskImage, String> {
    let config = &image.config;
    let env = config
        .env
        .iter()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let user = user(&config.user, &image.layers)?;
    Ok(TaskImage {
        command: config.entrypoint.iter().chain(&config.cmd).cloned().collect(),
        env,
        user,
        root: ImageRoot {
            working_dir: config.working_dir.clone(),
            layers: image.layers,
        },
    })
}

/// The image's `USER` (`name`, `uid`, `uid:gid` or `name:group`) as numbers. Root, by any name,
/// is refused its uid 0: the task then runs as a uid of its own, like any other.
fn user(spec: &str, layers: &[PathBuf]) -> Result<Option<(u32, u32)>, String> {
    let (user, group) = spec.split_once(':').unwrap_or((spec, ""));
    if user.is_empty() || user == "root" || user == "0" {
        return Ok(None);
    }
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => lookup(layers, "etc/passwd", user)
            .ok_or_else(|| format!("the image's USER {user:?} is not in its /etc/passwd"))?,
    };
    let gid = match group {
        "" => primary_gid,
        g => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup(layers, "etc/group", g)
                .map(|(gid, _)| gid)
                .ok_or_else(|| format!("the image's group {g:?} is not in its /etc/group"))?,
        },
    };
    Ok((uid != 0).then_some((uid, gid)))
}

/// Finds `name` in the topmost layer's copy of a passwd-style file: (field 3, field 4).
fn lookup(layers: &[PathBuf], file: &str, name: &str) -> Option<(u32, u32)> {
    let text = layers
        .iter()
        .rev()
        .find_map(|l| std::fs::read_to_string(l.join(file)).ok())?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() != Some(&name) {
            return None;
        }
        let id = fields.get(2)?.parse().ok()?;
        let second = fields.get(3).and_then(|f| f.parse().ok()).unwrap_or(id);
        Some((id, second))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_found_by_registry_host() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(REGISTRIES_FILE);
        let anonymous = |r: RegistryAuth| matches!(r, RegistryAuth::Anonymous);
        assert!(anonymous(credentials(&file, "reg:5000/app:1").unwrap()));
        std::fs::write(
            &file,
            "[[registry]]\nhost = \"reg:5000\"\nusername = \"u\"\npassword = \"p\"\n",
        )
        .unwrap();
        assert!(matches!(
            credentials(&file, "reg:5000/app:1").unwrap(),
            RegistryAuth::Basic { username, password } if username == "u" && password == "p"
        ));
        assert!(anonymous(credentials(&file, "other:5000/app:1").unwrap()));
        std::fs::write(&file, "[[registry]]\nhost = \"reg\"\nuser = \"u\"\n").unwrap();
        let err = credentials(&file, "reg/app").unwrap_err();
        assert!(
            err.contains("registries.toml is not valid") && err.contains("user"),
            "{err}"
        );
    }

    #[test]
    fn layouts_split_into_path_and_tag() {
        assert_eq!(split_layout("/srv/app:1.2"), ("/srv/app", Some("1.2")));
        assert_eq!(split_layout("/srv/app"), ("/srv/app", None));
        assert_eq!(split_layout("/srv/a:b/app"), ("/srv/a:b/app", None));
    }

    #[test]
    fn users_resolve_through_the_images_own_files() {
        let layer = tempfile::tempdir().unwrap();
        std::fs::create_dir(layer.path().join("etc")).unwrap();
        std::fs::write(
            layer.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(layer.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let layers = [layer.path().to_path_buf()];
        assert_eq!(user("", &layers).unwrap(), None);
        assert_eq!(user("root", &layers).unwrap(), None);
        assert_eq!(user("0:0", &layers).unwrap(), None);
        assert_eq!(user("app", &layers).unwrap(), Some((1000, 1001)));
        assert_eq!(user("app:staff", &layers).unwrap(), Some((1000, 50)));
        assert_eq!(user("4242:7", &layers).unwrap(), Some((4242, 7)));
        assert!(user("ghost", &layers).unwrap_err().contains("ghost"));
    }
}
