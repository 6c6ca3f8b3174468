//! A Lambda API of the tests' own, in front of the emulator: GetFunction and
//! GetLayerVersion for the functions a test describes (with layers, a LoggingConfig, an
//! Environment.Error: what moto cannot serve), their code and layer zips served from
//! the same server; every other request goes on to the emulator.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::lambda::code_sha256;
use crate::server::{Reply, Seen, TestServer};

/// A function as the fake API describes it.
#[derive(Debug, Clone, Default)]
pub struct FakeFunction {
    /// Its name.
    pub name: String,
    /// Its code zip.
    pub code: Bytes,
    /// Its layers' zips, in order.
    pub layers: Vec<Bytes>,
    /// More of `Configuration`, merged over the defaults (Runtime provided.al2023,
    /// Handler bootstrap, 256 MB, x86_64, no role).
    pub configuration: Value,
}

/// The running fake API.
pub struct FakeLambda {
    /// Its server: point `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_LAMBDA`) here.
    pub server: TestServer,
}

impl FakeLambda {
    /// Serves `functions`, forwarding the rest to `upstream` (the emulator).
    pub fn start(functions: Vec<FakeFunction>, upstream: Option<String>) -> FakeLambda {
        let base = Arc::new(Mutex::new(String::new()));
        let seen_base = base.clone();
        let server = TestServer::start(upstream, move |req: &Seen| {
            let base = seen_base.lock().unwrap().clone();
            answer(&functions, &base, req)
        });
        *base.lock().unwrap() = server.url.clone();
        FakeLambda { server }
    }

    /// The GET requests made for `path`.
    pub fn downloads(&self, path: &str) -> usize {
        self.server.requests().iter().filter(|r| r.path == path).count()
    }
}

fn answer(functions: &[FakeFunction], base: &str, req: &Seen) -> Reply {
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["2015-03-31", "functions", name, ..] => match find(functions, name) {
            Some(function) => Reply::json(200, &get_function(function, base)),
            None => Reply::json(
                404,
                &json!({"Type": "User", "Message": format!("Function not found: {name}")}),
            )
            .with_header("x-amzn-errortype", "ResourceNotFoundException"),
        },
        ["2018-10-31", "layers", layer, "versions", version] => {
            let (Some(function), Ok(n)) = (
                layer.strip_suffix("-layers").and_then(|f| find(functions, f)),
                version.parse::<usize>(),
            ) else {
                return Reply::json(404, &json!({"Message": "no such layer"}));
            };
            let zip = &function.layers[n - 1];
            Reply::json(
                200,
                &json!({"Content": {"Location": format!("{base}/code/{}/layer-{n}.zip", function.name), "CodeSha256": code_sha256(zip), "CodeSize": zip.len()},
                        "LayerArn": layer_arn(&function.name), "Version": n}),
            )
        }
        ["code", name, file] => {
            let Some(function) = find(functions, name) else {
                return Reply::json(404, &json!({}));
            };
            match file
                .strip_prefix("layer-")
                .and_then(|f| f.strip_suffix(".zip"))
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) => Reply::file(req, &function.layers[n - 1]),
                None => Reply::file(req, &function.code),
            }
        }
        _ => Reply::Forward,
    }
}

/// The function named `name` (a name, or `arn:aws:lambda:REGION:ACCOUNT:function:NAME`).
fn find<'a>(functions: &'a [FakeFunction], name: &str) -> Option<&'a FakeFunction> {
    let decoded = name.replace("%3A", ":");
    let name = if decoded.starts_with("arn:") {
        decoded.split(':').nth(6).unwrap_or_default().to_owned()
    } else {
        decoded
    };
    functions.iter().find(|f| f.name == name)
}

fn layer_arn(function: &str) -> String {
    format!("arn:aws:lambda:us-east-1:123456789012:layer:{function}-layers")
}

fn get_function(function: &FakeFunction, base: &str) -> Value {
    let layers: Vec<Value> = (1..=function.layers.len())
        .map(|n| json!({"Arn": format!("{}:{n}", layer_arn(&function.name)), "CodeSize": function.layers[n - 1].len()}))
        .collect();
    let mut configuration = json!({
        "FunctionName": function.name,
        "FunctionArn": format!("arn:aws:lambda:us-east-1:123456789012:function:{}", function.name),
        "Runtime": "provided.al2023", "Handler": "bootstrap", "Version": "$LATEST",
        "MemorySize": 256, "Timeout": 3, "CodeSize": function.code.len(),
        "CodeSha256": code_sha256(&function.code), "Layers": layers,
        "PackageType": "Zip", "Architectures": ["x86_64"],
    });
    if let (Some(config), Some(extra)) = (configuration.as_object_mut(), function.configuration.as_object()) {
        for (key, value) in extra {
            config.insert(key.clone(), value.clone());
        }
    }
    json!({
        "Configuration": configuration,
        "Code": {"RepositoryType": "S3", "Location": format!("{base}/code/{}/code.zip?X-Amz-Signature=s", function.name)}
    })
}
