//! The deploy files: serverless.yml packages offline with osls, the generated template
//! passes cfn-lint and our least-privilege rules, and the Dockerfile passes hadolint.

use std::process::Command;

use immortal_tests::osls::{
    arn_texts, as_list, attachment, iam_statements, package, repo, resource, sample_with_report, tag_conditioned,
    untagged_function_reads, Overflow, EXPORTS,
};
use immortal_tests::runner::{lambda_zip, without_cargo_test_env};
use serde_json::{json, Value};

/// Packages serverless.yml in a scratch copy of the service folder (artifacts from this
/// workspace's binaries, the real ffmpeg layer) and returns the generated template,
/// which cfn-lint passed.
fn packaged_template() -> &'static Value {
    static TEMPLATE: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let repo = repo();
        // In the build folder, made anew by each run of these tests (the template is read
        // for the whole process; a temp folder kept that long would outlive it).
        let service = immortal_tests::runner::profile_dir().join("test-packaged-service");
        let _ = std::fs::remove_dir_all(&service);
        std::fs::create_dir_all(&service).unwrap();
        for file in ["serverless.yml", "examples/primes/handler.py"] {
            std::fs::create_dir_all(service.join(file).parent().unwrap()).unwrap();
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
        package(
            &service,
            &[
                "--param=subnets=subnet-0a1b2c3d,subnet-4e5f6a7b",
                "--param=securityGroups=sg-0a1b2c3d",
            ],
        )
        .0
    })
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
            "IMMORTAL_STOP_TIMEOUT",
            "IMMORTAL_IDLE_TIMEOUT",
            "IMMORTAL_RELAUNCH",
            "IMMORTAL_TRUSTED_SENDERS",
            "IMMORTAL_HAND_OFF_QUEUE_URL"
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
    // What a drain worker's image cannot run is handed on, in every mode, by the
    // runner's role, which the forwarder trusts as a sender (and nobody else may send).
    let hand_off = &resource(template, "ForwarderEventSourceMappingSQSHandOffQueue")["Properties"];
    assert_ne!(hand_off["Enabled"], false, "{hand_off}");
    let trusted = resource(template, "ForwarderLambdaFunction")["Properties"]["Environment"]["Variables"]
        ["IMMORTAL_TRUSTED_SENDERS"]
        .to_string();
    assert!(
        trusted.contains("RunnerTaskRole") && trusted.contains("RoleId"),
        "{trusted}"
    );
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

    // A task definition per runtime, each on its own image, all alike otherwise.
    let custom = &resource(template, "RunnerTaskDefinition")["Properties"];
    let map = resource(template, "ForwarderLambdaFunction")["Properties"]["Environment"]["Variables"]
        ["IMMORTAL_TASK_DEFINITIONS"]
        .to_string();
    for (name, runtime, family) in [
        ("RunnerTaskDefinition", "provided.al2023", "immortal-test-runner"),
        (
            "RunnerTaskDefinitionPython312",
            "python3.12",
            "immortal-test-runner-python312",
        ),
        (
            "RunnerTaskDefinitionPython313",
            "python3.13",
            "immortal-test-runner-python313",
        ),
        (
            "RunnerTaskDefinitionNodejs20",
            "nodejs20.x",
            "immortal-test-runner-nodejs20",
        ),
        (
            "RunnerTaskDefinitionNodejs22",
            "nodejs22.x",
            "immortal-test-runner-nodejs22",
        ),
        ("RunnerTaskDefinitionJava21", "java21", "immortal-test-runner-java21"),
        ("RunnerTaskDefinitionJava17", "java17", "immortal-test-runner-java17"),
        ("RunnerTaskDefinitionRuby33", "ruby3.3", "immortal-test-runner-ruby33"),
        ("RunnerTaskDefinitionDotnet8", "dotnet8", "immortal-test-runner-dotnet8"),
    ] {
        let props = &resource(template, name)["Properties"];
        assert_eq!(props["Family"], family);
        let container = &props["ContainerDefinitions"][0];
        assert!(
            container["Image"].to_string().contains(&format!(":{runtime}-x86_64")),
            "{name}: {}",
            container["Image"]
        );
        assert_eq!(
            container["Environment"], custom["ContainerDefinitions"][0]["Environment"],
            "{name}"
        );
        assert_eq!(props["Cpu"], custom["Cpu"], "{name}");
        if runtime != "provided.al2023" {
            assert!(map.contains(&format!("{runtime}=${{{name}}}")), "{runtime} in {map}");
        }
    }
    // The examples are attached the way any function is (what serverless-immortal
    // generates, checked by the same assertions in tests/tests/plugin.rs): the tag, one
    // attempt, the overflow queue or a tagged queue of its own, a tagged role that trusts
    // the runner's (each function runs as itself; the runner holds none of its rights).
    let overflow = Overflow::exported_by(template);
    assert_eq!(overflow.queue, json!({"Fn::GetAtt": ["FailuresQueue", "Arn"]}));
    assert_eq!(overflow.runner_role, json!({"Fn::GetAtt": ["RunnerTaskRole", "Arn"]}));
    attachment(template, "ThumbnailBatchLambdaFunction").assert_by_destination("thumbnailBatch", &overflow);
    attachment(template, "PrimesLambdaFunction").assert_by_destination("primes", &overflow);
    let queue = attachment(template, "ThumbnailLambdaFunction").assert_by_dead_letter(
        template,
        "thumbnail",
        &thumbnail["Properties"]["FunctionName"],
        &overflow,
    );
    assert_eq!(queue, "ThumbnailDlq");
    let runner_role = resource(template, "RunnerTaskRole").to_string();
    assert!(
        !runner_role.contains("uploads"),
        "the runner holds no function's rights: {runner_role}"
    );
    let primes = &resource(template, "PrimesLambdaFunction")["Properties"];
    assert_eq!(primes["Runtime"], "python3.12");
    let primes_config = &resource(template, "PrimesLambdaEvConf")["Properties"];
    assert_eq!(primes_config["MaximumRetryAttempts"], 0);
    assert!(primes_config["DestinationConfig"]["OnFailure"]["Destination"]
        .to_string()
        .contains("FailuresQueue"));
}

/// Actions that have no resource-level permissions for our use: `*` is the only possible
/// resource (ListTasks is scoped by the ecs:cluster condition instead, checked below).
/// Actions for which the service defines no resource type (the Service Authorization
/// Reference lists none): `*` is the only resource they take.
const RESOURCELESS_ACTIONS: &[&str] = &[
    "ecr:GetAuthorizationToken",
    "ecs:ListTasks",
    "ecs:DescribeTaskDefinition",
    "ecs:RegisterTaskDefinition",
];

/// Actions that list a kind of resource by name: they take the account's resources of
/// that kind, and no tag condition applies (no one resource is read).
const LISTING_ACTIONS: &[&str] = &["sqs:ListQueues"];

#[test]
fn the_stack_keeps_a_durable_record_of_every_relaunch_and_watches_its_queues() {
    let template = packaged_template();
    // The dashboard: every metric the forwarder and the runner write, per function, and
    // the alarms.
    let dashboard = &resource(template, "OverflowDashboard")["Properties"];
    let body = dashboard["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("a body made with Fn::Sub");
    let substituted = with_placeholders(body);
    let body: Value = serde_json::from_str(&substituted).expect("the dashboard body is JSON");
    let text = body.to_string();
    for metric in immortal_overflow::metrics::Metric::ALL {
        assert!(
            text.contains(&format!("MetricName=\\\"{}\\\"", metric.name())),
            "the dashboard graphs {}: {text}",
            metric.name()
        );
    }
    assert!(text.contains(&format!(
        "{{{},{}}}",
        immortal_overflow::metrics::NAMESPACE,
        immortal_overflow::metrics::DIMENSION
    )));
    for alarm in [
        "ParkingQueueDepthAlarm",
        "ThumbnailDlqOldestMessageAlarm",
        "FailuresQueueOldestMessageAlarm",
    ] {
        assert!(
            substituted.contains(&format!("<{alarm}.Arn>")),
            "{alarm} on the dashboard"
        );
        resource(template, alarm);
    }
    assert_eq!(
        template["Outputs"]["DashboardName"]["Value"],
        json!({"Ref": "OverflowDashboard"})
    );
    // The payload bucket: encrypted, reachable over TLS only, expiring what it keeps.
    let bucket = &resource(template, "PayloadBucket")["Properties"];
    assert_eq!(
        bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
            ["SSEAlgorithm"],
        "AES256"
    );
    let rules: Vec<(&str, u64)> = bucket["LifecycleConfiguration"]["Rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["Prefix"].as_str().unwrap(), r["ExpirationInDays"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        rules,
        [
            ("envelopes/", 90),
            ("ledger/", 90),
            ("outcomes/", 14),
            ("undelivered/", 90)
        ]
    );
    let policy = &resource(template, "PayloadBucketPolicy")["Properties"]["PolicyDocument"]["Statement"][0];
    assert_eq!(policy["Effect"], "Deny");
    assert_eq!(policy["Condition"]["Bool"]["aws:SecureTransport"], "false");

    // The forwarder: required bucket, max attempts, and its two new triggers.
    let forwarder = &resource(template, "ForwarderLambdaFunction")["Properties"]["Environment"]["Variables"];
    assert_eq!(forwarder["IMMORTAL_PAYLOAD_BUCKET"], json!({"Ref": "PayloadBucket"}));
    assert_eq!(forwarder["IMMORTAL_MAX_ATTEMPTS"], "3");
    let rules: Vec<&Value> = template["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["Type"] == "AWS::Events::Rule" && !v["Properties"]["EventPattern"].is_null())
        .map(|(_, v)| v)
        .collect();
    assert_eq!(rules.len(), 1, "one rule on ECS task state changes");
    let pattern = &rules[0]["Properties"]["EventPattern"];
    assert_eq!(pattern["source"], json!(["aws.ecs"]));
    assert_eq!(pattern["detail-type"], json!(["ECS Task State Change"]));
    assert_eq!(pattern["detail"]["lastStatus"], json!(["STOPPED"]));
    assert_eq!(pattern["detail"]["startedBy"], json!(["immortal-forwarder"]));
    assert_eq!(
        pattern["detail"]["clusterArn"],
        json!([{"Fn::GetAtt": ["RunnerCluster", "Arn"]}])
    );
    let sweep = template["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("ForwarderEventsRuleSchedule"))
        .expect("the sweep's schedule")
        .1;
    assert_eq!(sweep["Properties"]["State"], "ENABLED", "the sweep runs in either mode");

    // The runner gets the task's stop timeout, less what it keeps for itself.
    let container = &resource(template, "RunnerTaskDefinition")["Properties"]["ContainerDefinitions"][0];
    assert_eq!(container["StopTimeout"], 120);
    let stop = container["Environment"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["Name"] == "IMMORTAL_STOP_TIMEOUT")
        .unwrap();
    assert_eq!(stop["Value"], "120");

    // Drain mode takes over both queues whose triggers it switches off.
    let scaler = &resource(template, "ScalerLambdaFunction")["Properties"]["Environment"]["Variables"];
    let drained = scaler["IMMORTAL_DRAIN_QUEUE_URL"].to_string();
    assert!(
        drained.contains("ThumbnailDlq") && drained.contains("FailuresQueue"),
        "{drained}"
    );

    // Alarms: the parking queue's depth, and the oldest message of each overflow queue.
    let alarms: Vec<(String, String)> = template["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|v| v["Type"] == "AWS::CloudWatch::Alarm")
        .map(|v| {
            let p = &v["Properties"];
            assert_eq!(p["AlarmActions"], json!([{"Ref": "AlarmTopic"}]), "{p}");
            (
                p["MetricName"].as_str().unwrap().to_owned(),
                p["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    for expected in [
        ("ApproximateNumberOfMessagesVisible", "ParkingQueue"),
        ("ApproximateAgeOfOldestMessage", "ThumbnailDlq"),
        ("ApproximateAgeOfOldestMessage", "FailuresQueue"),
    ] {
        assert!(
            alarms.iter().any(|(m, q)| (m.as_str(), q.as_str()) == expected),
            "{expected:?} in {alarms:?}"
        );
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
        for text in resources.iter().flat_map(arn_texts) {
            let every = text == "*" || text.ends_with(":::*") || text.ends_with(":*:*");
            // A whole kind of resource of the account: functions, roles, queues.
            let every_of_a_kind = text.ends_with(":function:*")
                || text.ends_with(":role/*")
                || text.ends_with(":repository/*")
                || text.ends_with("${AWS::AccountId}:*");
            let resourceless = actions.iter().all(|a| RESOURCELESS_ACTIONS.contains(&a.as_str()));
            let listing = actions.iter().all(|a| LISTING_ACTIONS.contains(&a.as_str()));
            if (every && !resourceless) || (every_of_a_kind && !tag_conditioned(statement) && !listing) {
                problems.push(format!(
                    "{role}: {actions:?} on {text} although an ARN or the immortal:enabled tag condition could say which"
                ));
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
    let function_reads = untagged_function_reads(&statements);
    assert!(
        function_reads.is_empty(),
        "functions are read only when tagged immortal:enabled=true:\n{}",
        function_reads.join("\n")
    );
    // The runner fetches any attached function and assumes its role, by the tag alone:
    // attaching a function never edits this stack.
    let runner: Vec<&Value> = statements
        .iter()
        .filter(|(role, _)| role == "RunnerTaskRole")
        .map(|(_, s)| s)
        .collect();
    let grants = |action: &str| -> Vec<&Value> {
        runner
            .iter()
            .copied()
            .filter(|s| as_list(&s["Action"]).contains(&json!(action)))
            .collect()
    };
    for action in ["lambda:GetFunction", "lambda:ListTags", "sts:AssumeRole"] {
        let found = grants(action);
        assert_eq!(found.len(), 1, "the task role's {action}: {found:?}");
        assert!(
            tag_conditioned(found[0]),
            "{action} only on what is tagged: {}",
            found[0]
        );
    }
    assert!(
        statements
            .iter()
            .all(|(_, s)| !as_list(&s["Action"]).contains(&json!("sts:AssumeRole")) || tag_conditioned(s)),
        "no role may assume roles other than tagged ones"
    );
}

/// The check above is no formality: it reads resources built with Fn::Sub and
/// Fn::Join, and refuses named functions as much as untagged wildcards.
#[test]
fn the_function_read_check_sees_through_sub_and_join() {
    let statement = |resource: Value, tagged: bool| {
        let mut s = json!({"Effect": "Allow", "Action": ["lambda:GetFunction"], "Resource": resource});
        if tagged {
            s["Condition"] = json!({"StringEquals": {"aws:ResourceTag/immortal:enabled": "true"}});
        }
        ("Role".to_owned(), s)
    };
    let join = json!({"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":lambda:us-east-1:123456789012:function:", {"Ref": "Fn"}]]});
    let sub_any = json!({"Fn::Sub": immortal_tests::osls::ANY_FUNCTION});
    let wildcard_join =
        json!({"Fn::Join": [":", ["arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}", "function", "*"]]});
    assert_eq!(
        untagged_function_reads(&[statement(join.clone(), true)]).len(),
        1,
        "a named function via Fn::Join"
    );
    assert_eq!(
        untagged_function_reads(&[statement(json!({"Fn::GetAtt": ["Fn", "Arn"]}), true)]).len(),
        1
    );
    assert_eq!(
        untagged_function_reads(&[statement(sub_any.clone(), false)]).len(),
        1,
        "no tag condition"
    );
    assert_eq!(
        untagged_function_reads(&[statement(json!([sub_any.clone(), join]), true)]).len(),
        1
    );
    assert!(untagged_function_reads(&[statement(sub_any, true)]).is_empty());
    assert!(
        untagged_function_reads(&[statement(wildcard_join, true)]).is_empty(),
        "Fn::Join spelled out"
    );
}

/// Everything the plugin's sample service imports, on both routes, is exported by the
/// overflow stack under that name.
#[test]
fn the_plugin_imports_only_what_the_overflow_stack_exports() {
    Overflow::exported_by(packaged_template());
    let exported: Vec<String> = EXPORTS.iter().map(|name| format!("immortal-test-{name}")).collect();
    let service = sample_with_report("immortal: { via: deadLetter }");
    let (template, _) = package(service.path(), &[]);
    let mut imports = Vec::new();
    collect_imports(&template, &mut imports);
    for name in [
        "immortal-test-OverflowQueueArn",
        "immortal-test-RunnerTaskRoleArn",
        "immortal-test-ParkingQueueArn",
        "immortal-test-ForwarderArn",
    ] {
        assert!(
            imports.contains(&name.to_owned()),
            "the sample imports {name}: {imports:?}"
        );
    }
    for import in &imports {
        assert!(
            exported.contains(import),
            "{import} is not exported by serverless.yml ({exported:?})"
        );
    }
}

fn collect_imports(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(name) = map.get("Fn::ImportValue").and_then(Value::as_str) {
                found.push(name.to_owned());
            }
            map.values().for_each(|v| collect_imports(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_imports(v, found)),
        _ => {}
    }
}

#[test]
fn the_dockerfile_is_an_aws_base_image_plus_the_runner_and_passes_hadolint() {
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
    let instructions: Vec<&str> = dockerfile
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(' ') && !l.trim().is_empty())
        .collect();
    let of = |keyword: &str| -> Vec<&str> {
        instructions
            .iter()
            .copied()
            .filter(|l| l.starts_with(&format!("{keyword} ")))
            .collect()
    };
    assert_eq!(of("FROM"), ["FROM ${BASE_IMAGE}"], "one stage, on the base image given");
    assert!(
        dockerfile.contains("ARG BASE_IMAGE=public.ecr.aws/lambda/provided:al2023"),
        "AWS's Lambda base image, provided:al2023 by default"
    );
    assert_eq!(
        of("COPY"),
        [
            "COPY --chmod=0755 target/images/${TARGETARCH}/runner /usr/local/bin/runner",
            "COPY --chown=0:10001 --chmod=4750 target/images/${TARGETARCH}/immortal-sandbox /usr/local/bin/immortal-sandbox"
        ],
        "the base plus the runner and its sandbox, built and tested outside; only the runner's group may start the sandbox"
    );
    let user = of("USER");
    assert_eq!(user.len(), 1);
    assert!(!user[0].contains("root") && !user[0].contains(" 0"), "{user:?}");
    assert_eq!(of("ENTRYPOINT"), ["ENTRYPOINT [\"/usr/local/bin/runner\"]"]);
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(
        ignore.contains("!target/images"),
        "the build context is the runner alone"
    );
}

#[test]
fn the_image_runner_is_built_for_glibc_2_26_and_runs_a_python_function_as_built() {
    let out = without_cargo_test_env(&mut Command::new(repo().join("scripts/build-images")))
        .arg("--binaries-only")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/build-images --binaries-only:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs at most GLIBC_2."), "{stderr}");
    let runner = repo().join("target/images/amd64/runner");
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("fn.zip");
    std::fs::write(
        &zip,
        immortal_tests::zips::folder_zip(&repo().join("tests/fixtures/functions/python"), &["lambda_function.py"]),
    )
    .unwrap();
    let ran = Command::new(&runner)
        .args(["--artifact".as_ref(), zip.as_os_str()])
        .args([
            "--runtime-dir".as_ref(),
            repo().join("tests/fixtures/runtimes/python").as_os_str(),
        ])
        .args(["--runtime", "python3.12", "--handler", "lambda_function.lambda_handler"])
        .args([
            "--event",
            r#"{"from":"the image binary"}"#,
            "--context",
            r#"{"request_id":"img-1"}"#,
        ])
        .env("IMMORTAL_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    let seen: Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(seen["request_id"], "img-1");
    assert_eq!(seen["event"]["from"], "the image binary");
}

/// `body` with each `${NAME}` of Fn::Sub replaced by `<NAME>` (what CloudFormation would
/// put there is a plain string either way).
fn with_placeholders(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closed substitution") + start;
        out.push('<');
        out.push_str(&rest[start + 2..end]);
        out.push('>');
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}
