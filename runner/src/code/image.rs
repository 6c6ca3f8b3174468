//! Container-image functions (`PackageType: Image`): what Lambda starts in the function's
//! own image, and the image's own settings read from ECR when the function's
//! `ImageConfig` does not give them all.
//!
//! Lambda runs `ENTRYPOINT` followed by `CMD` in `WorkingDir`, each taken from the
//! function's `ImageConfig` when set there, else from the image; `_HANDLER` is the first
//! element of the command; the code is in the image (`LAMBDA_TASK_ROOT=/var/task`) and
//! so are its extensions (`/opt/extensions`). Nothing is downloaded or unpacked: the
//! runner runs inside that image (the forwarder's task definition for the image puts it
//! there), so there is nothing to present either.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_ecr::types::ImageIdentifier;
use immortal_handler_sdk::aws::describe_error;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::CodeError;

pub(crate) use immortal_handler_sdk::container::{LAYERS_ROOT, TASK_ROOT};
/// The working directory when neither the function nor the image names one (Docker's).
const DEFAULT_WORKING_DIR: &str = "/";
/// An image configuration is a few kilobytes; more is not one.
const MAX_CONFIG_BYTES: usize = 4 << 20;

/// The manifest types BatchGetImage may answer with: single images, and indexes of them.
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
];

/// The function's `ImageConfig` (GetFunction's `ImageConfigResponse`): each field set
/// there overrides the image's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ImageConfig {
    /// `EntryPoint`, over the image's `ENTRYPOINT`.
    pub(crate) entry_point: Option<Vec<String>>,
    /// `Command`, over the image's `CMD`.
    pub(crate) command: Option<Vec<String>>,
    /// `WorkingDirectory`, over the image's `WorkingDir`.
    pub(crate) working_directory: Option<String>,
}

/// The image's own `ENTRYPOINT`, `CMD` and `WorkingDir` (its OCI configuration's
/// `config` object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct OwnConfig {
    /// `ENTRYPOINT`.
    #[serde(rename = "Entrypoint", default)]
    pub(crate) entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(rename = "Cmd", default)]
    pub(crate) cmd: Option<Vec<String>>,
    /// `WORKDIR`.
    #[serde(rename = "WorkingDir", default)]
    pub(crate) working_dir: Option<String>,
}

/// A container-image function as GetFunction describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageFunction {
    /// Its image, by digest when Lambda resolved one (`Code.ResolvedImageUri`).
    pub(crate) uri: String,
    /// Its `ImageConfig`.
    pub(crate) config: ImageConfig,
}

/// What starts the function in its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageStart {
    /// The image, for messages.
    pub(crate) image: String,
    /// Entry point then command.
    pub(crate) argv: Vec<String>,
    /// Where it starts.
    pub(crate) working_dir: PathBuf,
    /// `_HANDLER`: the command's first element (empty without a command).
    pub(crate) handler: String,
}

impl ImageConfig {
    /// Whether the function's own settings say everything, so that the image's are not
    /// needed.
    pub(crate) fn complete(&self) -> bool {
        self.entry_point.is_some() && self.command.is_some() && self.working_directory.is_some()
    }

    /// What Lambda starts for `image`: each setting from the function's `ImageConfig`,
    /// else from the image's own configuration (`own`). Refused when that leaves nothing
    /// to run.
    pub(crate) fn start(&self, image: &str, own: Option<&OwnConfig>) -> Result<ImageStart, CodeError> {
        let set = |v: &Option<Vec<String>>| v.clone().filter(|v| !v.is_empty());
        let entry = set(&self.entry_point)
            .or_else(|| own.and_then(|o| set(&o.entrypoint)))
            .unwrap_or_default();
        let command = set(&self.command)
            .or_else(|| own.and_then(|o| set(&o.cmd)))
            .unwrap_or_default();
        let working_dir = self
            .working_directory
            .clone()
            .or_else(|| own.and_then(|o| o.working_dir.clone()))
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| DEFAULT_WORKING_DIR.to_owned());
        let handler = command.first().cloned().unwrap_or_default();
        let argv: Vec<String> = entry.into_iter().chain(command).collect();
        if argv.is_empty() {
            return Err(CodeError::NoEntryPoint {
                image: image.to_owned(),
                why: if own.is_some() {
                    "neither its ImageConfig nor the image sets an ENTRYPOINT or CMD".into()
                } else {
                    "its ImageConfig sets no EntryPoint or Command".into()
                },
            });
        }
        Ok(ImageStart {
            image: image.to_owned(),
            argv,
            working_dir: PathBuf::from(working_dir),
            handler,
        })
    }
}

impl ImageStart {
    /// The program to execute: the first element of `argv`, found as the engine finds
    /// an entry point (a path as it is, relative to the working directory; a bare name
    /// on `PATH`). Refused, naming the image, when this container has no such program.
    pub(crate) fn program(&self, path_var: Option<&str>) -> Result<PathBuf, CodeError> {
        let first = &self.argv[0];
        let missing = |why: String| CodeError::NoEntryPoint {
            image: self.image.clone(),
            why,
        };
        let candidates: Vec<PathBuf> = if first.contains('/') {
            vec![self.working_dir.join(first)]
        } else {
            crate::emulator::bootstrap::on_path(path_var.unwrap_or(crate::emulator::bootstrap::LAMBDA_PATH), first)
                .collect()
        };
        for candidate in &candidates {
            if let Ok(meta) = std::fs::metadata(candidate) {
                if meta.is_file() && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0 {
                    return Ok(candidate.clone());
                }
            }
        }
        Err(missing(format!(
            "its entry point `{first}` is not an executable file in this container ({}); run the runner inside the function's own image (the forwarder's task definition for it does), or fix the image's ENTRYPOINT / the function's ImageConfig",
            if first.contains('/') {
                format!("looked at {}", candidates[0].display())
            } else {
                "looked on PATH".to_owned()
            }
        )))
    }
}

/// An image in ECR: `ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY[:TAG|@DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EcrImage {
    /// The registry's account id.
    pub(crate) registry: String,
    /// Its region.
    pub(crate) region: String,
    /// The repository's name.
    pub(crate) repository: String,
    /// `@sha256:...`, else a tag (`latest` when none is written).
    pub(crate) reference: Reference,
}

/// Which image of the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reference {
    /// `@sha256:...`.
    Digest(String),
    /// `:TAG`.
    Tag(String),
}

impl EcrImage {
    /// The parts of an ECR image URI; `None` for any other registry.
    pub(crate) fn parse(uri: &str) -> Option<EcrImage> {
        let (host, path) = uri.split_once('/')?;
        let mut labels = host.split('.');
        let registry = labels.next()?;
        if labels.next()? != "dkr" || labels.next()? != "ecr" {
            return None;
        }
        let region = labels.next()?;
        if registry.is_empty() || !registry.bytes().all(|b| b.is_ascii_digit()) || region.is_empty() {
            return None;
        }
        let (repository, reference) = if let Some((repo, digest)) = path.split_once('@') {
            (repo, Reference::Digest(digest.to_owned()))
        } else {
            match path.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo, Reference::Tag(tag.to_owned())),
                _ => (path, Reference::Tag("latest".to_owned())),
            }
        };
        if repository.is_empty() {
            return None;
        }
        Some(EcrImage {
            registry: registry.to_owned(),
            region: region.to_owned(),
            repository: repository.to_owned(),
            reference,
        })
    }

    fn identifier(reference: &Reference) -> ImageIdentifier {
        match reference {
            Reference::Digest(d) => ImageIdentifier::builder().image_digest(d).build(),
            Reference::Tag(t) => ImageIdentifier::builder().image_tag(t).build(),
        }
    }
}

/// The image's own configuration, from ECR: the manifest (BatchGetImage; for an index,
/// the manifest of `architecture`), then its config blob (GetDownloadUrlForLayer),
/// checked against its digest.
pub(crate) async fn own_config(
    sdk: &aws_config::SdkConfig,
    uri: &str,
    architecture: &str,
    http: &reqwest::Client,
) -> Result<OwnConfig, CodeError> {
    let unread = |reason: String| CodeError::ImageConfigUnread {
        image: uri.to_owned(),
        reason,
    };
    let image = EcrImage::parse(uri).ok_or_else(|| unread("it is not an image in ECR".into()))?;
    let ecr = aws_sdk_ecr::Client::from_conf(
        aws_sdk_ecr::config::Builder::from(sdk)
            .region(aws_sdk_ecr::config::Region::new(image.region.clone()))
            .build(),
    );
    let mut reference = image.reference.clone();
    // An index names one manifest per platform: one more hop, never more.
    for _ in 0..2 {
        let manifest = manifest(&ecr, &image, &reference).await.map_err(unread)?;
        match parse_manifest(&manifest, architecture).map_err(unread)? {
            Manifest::Index { digest } => reference = Reference::Digest(digest),
            Manifest::Image { config_digest } => {
                let blob = config_blob(&ecr, &image, &config_digest, http).await.map_err(unread)?;
                return parse_config(&blob).map_err(unread);
            }
        }
    }
    Err(unread("its index names another index".into()))
}

async fn manifest(ecr: &aws_sdk_ecr::Client, image: &EcrImage, reference: &Reference) -> Result<String, String> {
    let out = ecr
        .batch_get_image()
        .registry_id(&image.registry)
        .repository_name(&image.repository)
        .image_ids(EcrImage::identifier(reference))
        .set_accepted_media_types(Some(MANIFEST_TYPES.iter().map(|t| (*t).to_owned()).collect()))
        .send()
        .await
        .map_err(|e| format!("BatchGetImage failed: {}", describe_error(&e)))?;
    if let Some(failure) = out.failures().first() {
        return Err(format!(
            "BatchGetImage: {} ({})",
            failure.failure_reason().unwrap_or("no reason"),
            failure.failure_code().map(|c| c.as_str()).unwrap_or("no code")
        ));
    }
    out.images()
        .first()
        .and_then(|i| i.image_manifest())
        .map(str::to_owned)
        .ok_or_else(|| "BatchGetImage returned no manifest".to_owned())
}

async fn config_blob(
    ecr: &aws_sdk_ecr::Client,
    image: &EcrImage,
    digest: &str,
    http: &reqwest::Client,
) -> Result<Vec<u8>, String> {
    let out = ecr
        .get_download_url_for_layer()
        .registry_id(&image.registry)
        .repository_name(&image.repository)
        .layer_digest(digest)
        .send()
        .await
        .map_err(|e| format!("GetDownloadUrlForLayer({digest}) failed: {}", describe_error(&e)))?;
    let url = out
        .download_url()
        .ok_or_else(|| format!("GetDownloadUrlForLayer({digest}) returned no URL"))?;
    let response = http
        .get(url)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("downloading the image's configuration {digest}: {e}"))?;
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("downloading the image's configuration {digest}: {e}"))?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(format!("its configuration {digest} is over {MAX_CONFIG_BYTES} bytes"));
    }
    let actual = format!("sha256:{:x}", Sha256::digest(&bytes));
    if actual != digest {
        return Err(format!(
            "its configuration does not match its digest: expected {digest}, downloaded {actual}"
        ));
    }
    Ok(bytes.to_vec())
}

/// What a manifest is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Manifest {
    /// One image: its configuration blob's digest.
    Image { config_digest: String },
    /// An index: the digest of the manifest for the wanted architecture.
    Index { digest: String },
}

#[derive(Deserialize)]
struct ManifestDoc {
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    #[serde(default)]
    os: Option<String>,
}

/// Lambda's architecture name as OCI platforms spell it.
fn oci_architecture(lambda: &str) -> &str {
    match lambda {
        "arm64" => "arm64",
        _ => "amd64",
    }
}

fn parse_manifest(text: &str, architecture: &str) -> Result<Manifest, String> {
    let doc: ManifestDoc = serde_json::from_str(text).map_err(|e| format!("its manifest is not JSON: {e}"))?;
    if let Some(config) = doc.config {
        return Ok(Manifest::Image {
            config_digest: config.digest,
        });
    }
    let wanted = oci_architecture(architecture);
    let manifests = doc
        .manifests
        .ok_or_else(|| "its manifest names neither a configuration nor other manifests".to_owned())?;
    manifests
        .into_iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.architecture == wanted && p.os.as_deref().unwrap_or("linux") == "linux")
        })
        .map(|m| Manifest::Index { digest: m.digest })
        .ok_or_else(|| format!("its index has no linux/{wanted} image"))
}

fn parse_config(blob: &[u8]) -> Result<OwnConfig, String> {
    #[derive(Deserialize)]
    struct ConfigDoc {
        #[serde(default)]
        config: Option<OwnConfig>,
    }
    let doc: ConfigDoc =
        serde_json::from_slice(blob).map_err(|e| format!("its configuration is not an image configuration: {e}"))?;
    Ok(doc.config.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn strings(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn ecr_uris() {
        let by_digest =
            EcrImage::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/thumbs@sha256:ab12").unwrap();
        assert_eq!(
            (
                by_digest.registry.as_str(),
                by_digest.region.as_str(),
                by_digest.repository.as_str()
            ),
            ("123456789012", "eu-west-1", "team/thumbs")
        );
        assert_eq!(by_digest.reference, Reference::Digest("sha256:ab12".into()));
        let by_tag = EcrImage::parse("123456789012.dkr.ecr.us-east-1.amazonaws.com/thumbs:v2").unwrap();
        assert_eq!(by_tag.reference, Reference::Tag("v2".into()));
        let bare = EcrImage::parse("123456789012.dkr.ecr.us-east-1.amazonaws.com/thumbs").unwrap();
        assert_eq!(bare.reference, Reference::Tag("latest".into()));
        assert_eq!(EcrImage::parse("docker.io/library/python:3.12"), None);
        assert_eq!(EcrImage::parse("public.ecr.aws/lambda/python:3.12"), None);
    }

    #[test]
    fn the_functions_image_config_wins_field_by_field() {
        let own = OwnConfig {
            entrypoint: strings(&["/lambda-entrypoint.sh"]),
            cmd: strings(&["app.handler"]),
            working_dir: Some("/var/task".into()),
        };
        let none = ImageConfig::default();
        let start = none.start("img", Some(&own)).unwrap();
        assert_eq!(start.argv, ["/lambda-entrypoint.sh", "app.handler"]);
        assert_eq!(
            (start.handler.as_str(), start.working_dir.as_path()),
            ("app.handler", Path::new("/var/task"))
        );
        let command_only = ImageConfig {
            command: strings(&["other.handler", "--flag"]),
            ..Default::default()
        };
        let start = command_only.start("img", Some(&own)).unwrap();
        assert_eq!(start.argv, ["/lambda-entrypoint.sh", "other.handler", "--flag"]);
        assert_eq!(start.handler, "other.handler");
        let all = ImageConfig {
            entry_point: strings(&["python3", "-m", "awslambdaric"]),
            command: strings(&["x.y"]),
            working_directory: Some("/app".into()),
        };
        assert!(all.complete() && !command_only.complete());
        let start = all.start("img", None).unwrap();
        assert_eq!(start.argv, ["python3", "-m", "awslambdaric", "x.y"]);
        assert_eq!(start.working_dir, Path::new("/app"));
        let no_workdir = OwnConfig {
            working_dir: None,
            ..own
        };
        assert_eq!(
            none.start("img", Some(&no_workdir)).unwrap().working_dir,
            Path::new("/")
        );
    }

    #[test]
    fn nothing_to_run_is_refused_naming_the_image() {
        let err = ImageConfig::default()
            .start(
                "123.dkr.ecr.us-east-1.amazonaws.com/f@sha256:1",
                Some(&OwnConfig::default()),
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("123.dkr.ecr.us-east-1.amazonaws.com/f@sha256:1") && err.contains("ENTRYPOINT"),
            "{err}"
        );
    }

    #[test]
    fn the_entry_point_is_found_as_the_engine_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("entry");
        std::fs::write(&program, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let start = |first: &str| ImageStart {
            image: "img".into(),
            argv: vec![first.to_owned(), "h".into()],
            working_dir: dir.path().to_owned(),
            handler: "h".into(),
        };
        let path = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(start("entry").program(Some(&path)).unwrap(), program);
        assert_eq!(start("./entry").program(None).unwrap(), dir.path().join("./entry"));
        assert_eq!(start(&program.display().to_string()).program(None).unwrap(), program);
        let err = start("missing").program(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("`missing`") && err.contains("img"), "{err}");
    }

    #[test]
    fn manifests_and_indexes() {
        // Shapes from the OCI image spec (image-manifest.md, image-index.md).
        let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c0","size":7023},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:l1","size":32654}]}"#;
        assert_eq!(
            parse_manifest(manifest, "x86_64").unwrap(),
            Manifest::Image {
                config_digest: "sha256:c0".into()
            }
        );
        let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:ppc","size":7143,"platform":{"architecture":"ppc64le","os":"linux"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:amd","size":7682,"platform":{"architecture":"amd64","os":"linux"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:arm","size":7682,"platform":{"architecture":"arm64","os":"linux"}}]}"#;
        assert_eq!(
            parse_manifest(index, "x86_64").unwrap(),
            Manifest::Index {
                digest: "sha256:amd".into()
            }
        );
        assert_eq!(
            parse_manifest(index, "arm64").unwrap(),
            Manifest::Index {
                digest: "sha256:arm".into()
            }
        );
        let only_ppc = index.replace("amd64", "s390x").replace("\"arm64\"", "\"riscv64\"");
        assert!(parse_manifest(&only_ppc, "x86_64").unwrap_err().contains("linux/amd64"));
    }

    #[test]
    fn image_configurations() {
        // The shape of the OCI image spec's config.md example.
        let blob = br#"{"created":"2015-10-31T22:22:56.015925234Z","architecture":"amd64","os":"linux",
            "config":{"User":"alice","Env":["PATH=/usr/local/bin"],"Entrypoint":["/bin/my-app-binary"],
            "Cmd":["--foreground","--config","/etc/my-app.d/default.cfg"],"WorkingDir":"/home/alice"},
            "rootfs":{"diff_ids":[],"type":"layers"}}"#;
        let own = parse_config(blob).unwrap();
        assert_eq!(own.entrypoint, strings(&["/bin/my-app-binary"]));
        assert_eq!(own.cmd.as_ref().map(Vec::len), Some(3));
        assert_eq!(own.working_dir.as_deref(), Some("/home/alice"));
        assert_eq!(
            parse_config(br#"{"config":{"Cmd":null}}"#).unwrap(),
            OwnConfig::default()
        );
        assert!(parse_config(b"not json").is_err());
    }
}
