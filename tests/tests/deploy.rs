//! The deploy files: serverless.yml packages offline with osls, the generated template
//! passes cfn-lint and our least-privilege rules, and the Dockerfile passes hadolint.

use std::path::{Path, PathBuf};
use std::process::Command;

use immortal_tests::emulator::Emulator;
use immortal_tests::runner::lambda_zip;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// Packages serverless.yml in a scratch copy of the service folder (artifacts from this
/// workspace's binaries, the real ffmpeg layer) and returns the generated template.
fn packaged_template() -> &'static Value {
    static TEMPLATE: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let repo = repo();
        let service = tempfile::tempdir().unwrap().keep();
        for file in ["serverless.yml", ".cfnlintrc.yaml"] {
            std::fs::copy(repo.join(file), service.join(file)).unwrap();
        }
        for (binary, folder) in [("thumbnail", "thumbnail"), ("dlq-forwarder", "dlq-forwarder")] {
            let dir = service.join("target/lambda").join(folder);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::rename(lambda_zip(binary, &dir), dir.join("bootstrap.zip")).unwrap();
        }
        let layer = Command::new(repo.join("scripts/build-ffmpeg-layer")).output().unwrap();
        assert!(
            layer.status.success(),
            "build-ffmpeg-layer: {}",
            String::from_utf8_lossy(&layer.stderr)
        );
        std::fs::create_dir_all(service.join("target/layers")).unwrap();
        std::fs::copy(
            repo.join("target/layers/ffmpeg-x86_64.zip"),
            service.join("target/layers/ffmpeg-x86_64.zip"),
        )
        .unwrap();

        let osls_dir = repo.join(".tools/node_modules/osls");
        let out = Command::new(repo.join(".tools/node_modules/.bin/osls"))
            .current_dir(&service)
            .args(["package", "--stage", "test", "--region", "us-east-1"])
            .args([
                "--param=subnets=subnet-0a1b2c3d,subnet-4e5f6a7b",
                "--param=securityGroups=sg-0a1b2c3d",
            ])
            .envs(Emulator::shared().env())
            .env(
                "NODE_OPTIONS",
                format!("--require {}", repo.join("tests/fixtures/osls-offline.js").display()),
            )
            .env("IMMORTAL_OSLS_DIR", &osls_dir)
            .output()
            .expect("osls (scripts/setup test installs it into .tools/)");
        assert!(
            out.status.success(),
            "osls package failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let path = service.join(".serverless/cloudformation-template-update-stack.json");
        let lint = Command::new("cfn-lint")
            .current_dir(&service)
            .arg(&path)
            .output()
            .expect("cfn-lint");
        assert!(
            lint.status.success(),
            "cfn-lint:\n{}",
            String::from_utf8_lossy(&lint.stdout)
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    })
}

fn resource<'a>(template: &'a Value, name: &str) -> &'a Value {
    template["Resources"]
        .get(name)
        .unwrap_or_else(|| panic!("no resource {name}"))
}

#[test]
fn serverless_yml_packages_offline_and_passes_cfn_lint() {
    let template = packaged_template();
    let thumbnail = resource(template, "ThumbnailLambdaFunction");
    assert_eq!(
        thumbnail["Properties"]["DeadLetterConfig"]["TargetArn"],
        serde_json::json!({"Fn::GetAtt": ["ThumbnailDlq", "Arn"]})
    );
    assert_eq!(thumbnail["Properties"]["Runtime"], "provided.al2023");
    assert_eq!(
        resource(template, "ThumbnailLambdaEvConf")["Properties"]["MaximumRetryAttempts"],
        0
    );
    let dlq = resource(template, "ThumbnailDlq");
    assert_eq!(dlq["Properties"]["Tags"][0]["Key"], "immortal:function");
    assert_eq!(
        dlq["Properties"]["Tags"][0]["Value"],
        thumbnail["Properties"]["FunctionName"]
    );
    assert!(dlq["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]
        .to_string()
        .contains("ParkingQueue"));
    let batch = resource(template, "ThumbnailBatchLambdaEvConf");
    assert!(batch["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]
        .to_string()
        .contains("FailuresQueue"));
    for mapping in [
        "ForwarderEventSourceMappingSQSThumbnailDlq",
        "ForwarderEventSourceMappingSQSFailuresQueue",
    ] {
        let props = &resource(template, mapping)["Properties"];
        assert_eq!(
            props["FunctionResponseTypes"],
            serde_json::json!(["ReportBatchItemFailures"])
        );
        assert!(
            props["ScalingConfig"]["MaximumConcurrency"].as_u64().is_some(),
            "{props}"
        );
    }
    let cluster = resource(template, "RunnerCluster");
    assert_eq!(
        cluster["Properties"]["CapacityProviders"],
        serde_json::json!(["FARGATE", "FARGATE_SPOT"])
    );
    let task = &resource(template, "RunnerTaskDefinition")["Properties"];
    assert!(task["EphemeralStorage"]["SizeInGiB"].as_u64().is_some());
    assert_eq!(
        resource(template, "RunnerLogGroup")["Properties"]["RetentionInDays"],
        14
    );
    let env = &task["ContainerDefinitions"][0]["Environment"];
    let names: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "IMMORTAL_ON_SUCCESS",
            "IMMORTAL_ON_FAILURE",
            "IMMORTAL_PAYLOAD_BUCKET",
            "IMMORTAL_IDLE_TIMEOUT",
            "IMMORTAL_RELAUNCH"
        ]
    );
    let on_success =
        &resource(template, "ThumbnailLambdaEvConf")["Properties"]["DestinationConfig"]["OnSuccess"]["Destination"];
    assert!(
        on_success.to_string().contains("ThumbnailOutcomesQueue"),
        "{on_success}"
    );
    // The mode switch: per-message tasks on by default, the drain scaler's schedule off.
    let mapping = &resource(template, "ForwarderEventSourceMappingSQSThumbnailDlq")["Properties"];
    assert_eq!(mapping["Enabled"], true);
    let schedule = template["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("ScalerEventsRuleSchedule"))
        .expect("the scaler's schedule")
        .1;
    assert_eq!(schedule["Properties"]["State"], "DISABLED");
    let scaler_env = &resource(template, "ScalerLambdaFunction")["Properties"]["Environment"]["Variables"];
    assert_eq!(scaler_env["IMMORTAL_MODE"], "drain");
    let payload = &resource(template, "PayloadBucket")["Properties"];
    assert_eq!(payload["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"], 14);
}

/// Actions that have no resource-level permissions for our use: `*` is the only possible
/// resource (ListTasks is scoped by the ecs:cluster condition instead, checked below).
const RESOURCELESS_ACTIONS: &[&str] = &["ecr:GetAuthorizationToken", "ecs:ListTasks"];

/// Every Allow statement of every IAM role and policy in the template.
fn iam_statements(template: &Value) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for (name, resource) in template["Resources"].as_object().unwrap() {
        let props = &resource["Properties"];
        let documents: Vec<&Value> = match resource["Type"].as_str() {
            Some("AWS::IAM::Role") => props["Policies"]
                .as_array()
                .map(|p| p.iter().map(|p| &p["PolicyDocument"]).collect())
                .unwrap_or_default(),
            Some("AWS::IAM::Policy") | Some("AWS::IAM::ManagedPolicy") => vec![&props["PolicyDocument"]],
            _ => vec![],
        };
        for doc in documents {
            for statement in doc["Statement"].as_array().into_iter().flatten() {
                if statement["Effect"] == "Allow" {
                    found.push((name.clone(), statement.clone()));
                }
            }
        }
    }
    found
}

fn as_list(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

#[test]
fn iam_is_least_privilege_with_no_wildcard_where_an_arn_is_known() {
    let statements = iam_statements(packaged_template());
    assert!(statements.len() >= 10, "found only {} statements", statements.len());
    let mut problems = Vec::new();
    for (role, statement) in &statements {
        let actions: Vec<String> = as_list(&statement["Action"])
            .iter()
            .map(|a| a.as_str().unwrap_or_default().to_owned())
            .collect();
        let resources = as_list(&statement["Resource"]);
        for action in &actions {
            if action == "*" || action.ends_with(":*") {
                problems.push(format!("{role}: wildcard action {action}"));
            }
        }
        for resource in &resources {
            let text = resource.as_str().map(str::to_owned);
            let wildcard = text.as_deref() == Some("*")
                || text
                    .as_deref()
                    .is_some_and(|t| t.ends_with(":::*") || t.ends_with(":*:*"));
            if wildcard && !actions.iter().all(|a| RESOURCELESS_ACTIONS.contains(&a.as_str())) {
                problems.push(format!("{role}: {actions:?} on {resource} although an ARN is known"));
            }
        }
        if actions.iter().any(|a| a == "iam:PassRole") {
            let passed_to = &statement["Condition"]["StringEquals"]["iam:PassedToService"];
            if passed_to != "ecs-tasks.amazonaws.com" {
                problems.push(format!(
                    "{role}: iam:PassRole without the iam:PassedToService condition"
                ));
            }
            if resources.len() != 2 {
                problems.push(format!(
                    "{role}: iam:PassRole should name exactly the runner's two roles, names {resources:?}"
                ));
            }
        }
        if actions.iter().any(|a| a == "ecs:ListTasks") && statement["Condition"]["ArnEquals"]["ecs:cluster"].is_null()
        {
            problems.push(format!("{role}: ecs:ListTasks must be limited to the runner's cluster"));
        }
        if actions.iter().any(|a| a == "ecs:RunTask") {
            let on_task_definition = resources.iter().all(|r| r.to_string().contains(":task-definition/"));
            if !on_task_definition || statement["Condition"]["ArnEquals"]["ecs:cluster"].is_null() {
                problems.push(format!(
                    "{role}: ecs:RunTask must be limited to the runner's task definition and cluster"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "IAM problems:\n{}", problems.join("\n"));
    let runner = statements
        .iter()
        .filter(|(role, _)| role == "RunnerTaskRole")
        .collect::<Vec<_>>();
    let get_function: Vec<_> = runner
        .iter()
        .filter(|(_, s)| s["Action"] == "lambda:GetFunction")
        .collect();
    assert_eq!(
        get_function.len(),
        1,
        "the task role may GetFunction on the served functions only"
    );
}

#[test]
fn the_dockerfile_passes_hadolint_and_runs_as_non_root() {
    let out = Command::new("hadolint")
        .arg(repo().join("Dockerfile"))
        .output()
        .expect("hadolint (scripts/setup test installs it)");
    assert!(
        out.status.success(),
        "hadolint:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let final_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    let user = final_stage
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER in the final stage");
    assert!(
        !user.contains("root") && !user.trim_end().ends_with(" 0") && !user.contains(" 0:"),
        "{user}"
    );
    assert!(final_stage.contains("ENTRYPOINT [\"/usr/local/bin/runner\"]"));
    assert!(
        final_stage.starts_with("${AL2023}-minimal") || final_stage.contains("amazonlinux"),
        "Amazon Linux 2023 base"
    );
}

#[test]
fn the_readme_shows_how_to_attach_the_dead_letter_queue_to_any_function() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains("DeadLetterConfig:") && readme.contains("maximumRetryAttempts: 0"),
        "the 5-line snippet"
    );
    assert!(Path::new(&repo().join("serverless.yml")).is_file());
}
