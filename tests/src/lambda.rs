//! Functions in the emulator, made the way the runner can fetch them back.

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_sdk_lambda::types::{Architecture, Environment, FunctionCode, ImageConfig, PackageType, Runtime};
use base64::Engine;
use sha2::{Digest, Sha256};

/// The bucket Lambda's `Code.Location` URLs point at, in the emulator's region.
pub const TASKS_BUCKET: &str = "awslambda-us-east-1-tasks";

/// base64 SHA-256, as Lambda's CodeSha256.
pub fn code_sha256(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

/// A deployed function.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// Its ARN (unqualified).
    pub arn: String,
    /// Its CodeSha256.
    pub sha256: String,
}

/// Creates function `name` from `zip`, with `env`, on the custom runtime. See [`deploy_as`].
pub async fn deploy(sdk: &SdkConfig, name: &str, zip: &[u8], env: &[(&str, &str)]) -> Deployed {
    deploy_as(sdk, name, zip, env, Runtime::Providedal2023, "bootstrap").await
}

/// The functions the tests' fixture records name (`thumbnail`, `echo`), created once per
/// emulator: the forwarder looks up the runtime of every function it relaunches, as it
/// does in AWS.
pub async fn fixture_functions(sdk: &SdkConfig) {
    ensure_functions(sdk, &["thumbnail", "echo"]).await;
}

/// Functions `names` on the custom runtime (a stand-in zip), unless they exist.
pub async fn ensure_functions(sdk: &SdkConfig, names: &[&str]) {
    let client = aws_sdk_lambda::Client::new(sdk);
    for name in names.iter().copied() {
        if client.get_function().function_name(name).send().await.is_ok() {
            continue;
        }
        let zip = crate::zips::zip_bytes(&[crate::zips::Entry::File("bootstrap", b"#!/bin/sh\n", 0o755)]);
        let created = client
            .create_function()
            .function_name(name)
            .runtime(Runtime::Providedal2023)
            .role(test_role(sdk).await)
            .handler("bootstrap")
            .code(FunctionCode::builder().zip_file(zip.into()).build())
            .send()
            .await;
        // Another test of this process may have created it first.
        if let Err(e) = created {
            assert!(
                client.get_function().function_name(name).send().await.is_ok(),
                "cannot create {name}: {e:?}"
            );
        }
    }
}

/// Creates function `name` on `runtime` from `zip`, with `env`. The zip is stored public-read in the
/// tasks bucket: moto reports `Code.Location` as an unsigned URL into
/// `awslambda-<region>-tasks` but never stores the zip there itself, so the function is
/// created from an S3 object at that very key, readable without a signature.
pub async fn deploy_as(
    sdk: &SdkConfig,
    name: &str,
    zip: &[u8],
    env: &[(&str, &str)],
    runtime: Runtime,
    handler: &str,
) -> Deployed {
    let role = test_role(sdk).await;
    let s3 = immortal_handler_sdk::aws::s3_client(sdk);
    let _ = s3.create_bucket().bucket(TASKS_BUCKET).send().await;
    let key = format!("{name}-{}.zip", uuid_like());
    s3.put_object()
        .bucket(TASKS_BUCKET)
        .key(&key)
        .acl(aws_sdk_s3::types::ObjectCannedAcl::PublicRead)
        .body(zip.to_vec().into())
        .send()
        .await
        .expect("put code zip");
    let variables: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let out = aws_sdk_lambda::Client::new(sdk)
        .create_function()
        .function_name(name)
        .runtime(runtime)
        .role(role)
        .handler(handler)
        .code(FunctionCode::builder().s3_bucket(TASKS_BUCKET).s3_key(&key).build())
        .environment(Environment::builder().set_variables(Some(variables)).build())
        .memory_size(512)
        .timeout(3)
        .send()
        .await
        .expect("create function");
    Deployed {
        arn: out.function_arn.unwrap(),
        sha256: out.code_sha256.unwrap(),
    }
}

/// Creates container-image function `name` from `image_uri`, with `image_config`
/// (`EntryPoint`, `Command`, `WorkingDirectory`; each `None` leaves the image's own) and
/// `env`, on `architecture`. The emulator stores the image and its settings and answers
/// them in GetFunction, as Lambda does; it does not check that the image exists.
pub async fn deploy_image(
    sdk: &SdkConfig,
    name: &str,
    image_uri: &str,
    image_config: Option<ImageConfig>,
    env: &[(&str, &str)],
    architecture: Architecture,
) -> String {
    let role = test_role(sdk).await;
    let variables: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let out = aws_sdk_lambda::Client::new(sdk)
        .create_function()
        .function_name(name)
        .package_type(PackageType::Image)
        .role(role)
        .code(FunctionCode::builder().image_uri(image_uri).build())
        .set_image_config(image_config)
        .environment(Environment::builder().set_variables(Some(variables)).build())
        .architectures(architecture)
        .memory_size(512)
        .timeout(3)
        .send()
        .await
        .expect("create image function");
    out.function_arn.unwrap()
}

/// The execution role every test function uses (created once; creation may race).
pub async fn test_role(sdk: &SdkConfig) -> String {
    let iam = aws_sdk_iam::Client::new(sdk);
    let name = "immortal-test-fn";
    let created = iam
        .create_role()
        .role_name(name)
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await;
    match created {
        Ok(out) => out.role.expect("role").arn,
        Err(_) => {
            iam.get_role()
                .role_name(name)
                .send()
                .await
                .expect("get role")
                .role
                .expect("role")
                .arn
        }
    }
}

/// A short unique suffix.
pub fn uuid_like() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].to_owned()
}

/// A role `name` in the emulator, to be a function's execution role (the emulator does
/// not evaluate trust policies).
pub async fn create_role(sdk: &SdkConfig, name: &str) -> String {
    aws_sdk_iam::Client::new(sdk)
        .create_role()
        .role_name(name)
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await
        .expect("create role")
        .role
        .expect("role")
        .arn
}

/// Gives function `name` the execution role `role`.
pub async fn set_role(sdk: &SdkConfig, name: &str, role: &str) {
    aws_sdk_lambda::Client::new(sdk)
        .update_function_configuration()
        .function_name(name)
        .role(role)
        .send()
        .await
        .expect("update role");
}

/// A context naming function `name` (unqualified, in the emulator's account) and `request_id`.
pub fn context_for(name: &str, request_id: &str) -> String {
    serde_json::json!({"request_id": request_id, "invoked_function_arn": format!("arn:aws:lambda:us-east-1:123456789012:function:{name}")}).to_string()
}

/// Function `name` from `zip` with `env`, on the custom runtime, with an execution role
/// of its own, `role_name`; the role's ARN.
pub async fn deploy_with_role(
    sdk: &SdkConfig,
    name: &str,
    zip: &[u8],
    env: &[(&str, &str)],
    role_name: &str,
) -> String {
    deploy(sdk, name, zip, env).await;
    let role = create_role(sdk, role_name).await;
    set_role(sdk, name, &role).await;
    role
}

/// The unique id of role `name`, which SQS names (with the session) as a message's sender.
pub async fn role_id(sdk: &SdkConfig, name: &str) -> String {
    aws_sdk_iam::Client::new(sdk)
        .get_role()
        .role_name(name)
        .send()
        .await
        .expect("get role")
        .role
        .expect("role")
        .role_id
}
