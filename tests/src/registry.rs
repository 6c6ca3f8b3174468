//! ECR as the runner sees it, played by the tests: the emulator's ECR cannot serve a
//! config blob (it has no GetDownloadUrlForLayer), and it resolves an image function's
//! digest from the URI rather than from an image. BatchGetImage answers the manifests
//! given (by repository, whatever the reference), GetDownloadUrlForLayer a URL to a
//! blob served here; everything else goes on to the emulator. The answers have the
//! shapes of the ECR API reference (BatchGetImage, GetDownloadUrlForLayer).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::emulator::Emulator;
use crate::server::{Reply, Seen, TestServer};

/// The stand-in registry.
pub struct Registry {
    server: TestServer,
}

impl Registry {
    /// Serves `manifests` (repository, manifest) and `blobs` (digest, bytes).
    pub fn start(manifests: Vec<(String, String)>, blobs: Vec<(String, Bytes)>) -> Registry {
        let base: Arc<OnceLock<String>> = Arc::default();
        let known = base.clone();
        let server = TestServer::start(Some(Emulator::shared().url.clone()), move |req: &Seen| {
            match req.target() {
                Some("BatchGetImage") => {
                    let body = req.json();
                    let repository = body["repositoryName"].as_str().unwrap_or_default();
                    return Reply::json(
                        200,
                        &match manifests.iter().find(|(r, _)| r == repository) {
                            Some((_, manifest)) => json!({"images": [{
                                "registryId": body["registryId"], "repositoryName": repository,
                                "imageId": body["imageIds"][0], "imageManifest": manifest,
                            }], "failures": []}),
                            None => json!({"images": [], "failures": [{
                                "imageId": body["imageIds"][0], "failureCode": "ImageNotFound",
                                "failureReason": "Requested image not found",
                            }]}),
                        },
                    );
                }
                Some("GetDownloadUrlForLayer") => {
                    let digest = req.json()["layerDigest"].as_str().unwrap_or_default().to_owned();
                    let url = format!("{}/blobs/{digest}", known.get().unwrap());
                    return Reply::json(200, &json!({"downloadUrl": url, "layerDigest": digest}));
                }
                _ => {}
            }
            if let Some(digest) = req.path.strip_prefix("/blobs/") {
                return match blobs.iter().find(|(d, _)| d == digest) {
                    Some((_, blob)) => Reply::Full {
                        status: 200,
                        headers: vec![],
                        body: blob.clone(),
                    },
                    None => Reply::json(404, &json!({})),
                };
            }
            Reply::Forward
        });
        base.set(server.url.clone()).unwrap();
        Registry { server }
    }

    /// Serves one image of `repository` whose configuration is `config`.
    pub fn serving(repository: &str, config: Vec<u8>) -> Registry {
        let (manifest, digest) = manifest_for(&config);
        Registry::start(
            vec![(repository.to_owned(), manifest)],
            vec![(digest, Bytes::from(config))],
        )
    }

    /// Its endpoint (`AWS_ENDPOINT_URL_ECR`).
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// The requests it saw.
    pub fn requests(&self) -> Vec<Seen> {
        self.server.requests()
    }
}

/// An image manifest (Docker's v2 schema 2) naming the config blob `config`, and the
/// blob's digest.
pub fn manifest_for(config: &[u8]) -> (String, String) {
    let digest = format!("sha256:{:x}", Sha256::digest(config));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": digest},
        "layers": [],
    });
    (manifest.to_string(), digest)
}
