//! serverless-immortal, the Serverless Framework plugin that attaches functions to the
//! overflow stack: the sample service (tests/fixtures/plugin-service) packaged offline
//! with osls and the plugin installed from its folder, its settings' errors, its
//! command, its npm package, and the attach snippets in docs/attach.md for everyone else.

use std::path::Path;
use std::process::Command;

use immortal_tests::osls::{
    attachment, cfn_lint, iam_statements, npm, osls, package, printed, repo, resource, sample_service,
    sample_with_report, Overflow,
};
use serde_json::{json, Value};

/// The sample service's stage is `test`, so the overflow stack is `immortal-test`.
fn overflow() -> Overflow {
    Overflow::imported_from("immortal-test")
}

/// Whether anything in `value` mentions `needle`.
fn mentions(value: &Value, needle: &str) -> bool {
    value.to_string().contains(needle)
}

#[test]
fn the_sample_service_attaches_exactly_the_two_marked_functions() {
    let service = sample_service(|yml| yml);
    // Installed from the folder, it needs nothing else.
    let installed: Vec<String> = std::fs::read_dir(service.path().join("node_modules"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    assert_eq!(installed, ["serverless-immortal"]);

    let (template, printed) = package(service.path(), &[]);
    assert!(!printed.contains("serverless-immortal"), "no warning: {printed}");
    let overflow = overflow();

    // Python, on the framework's shared role.
    let report = attachment(&template, "ReportLambdaFunction");
    report.assert_by_destination("report", &overflow);
    assert_eq!(report.role.as_deref(), Some("IamRoleLambdaExecution"));
    assert_eq!(
        resource(&template, "ReportLambdaFunction")["Properties"]["Runtime"],
        "python3.12"
    );
    // Node.js, on a role of its own (`role: RenderRole`).
    let render = attachment(&template, "RenderLambdaFunction");
    render.assert_by_destination("render", &overflow);
    assert_eq!(render.role.as_deref(), Some("RenderRole"));
    assert_eq!(
        resource(&template, "RenderLambdaFunction")["Properties"]["Runtime"],
        "nodejs22.x"
    );
    // Each trust statement and send permission once, however the framework and the
    // plugin both had a say.
    for (role, queue) in [
        ("IamRoleLambdaExecution", &overflow.queue),
        ("RenderRole", &overflow.queue),
    ] {
        let trust = &resource(&template, role)["Properties"]["AssumeRolePolicyDocument"]["Statement"];
        assert_eq!(
            trust
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| mentions(s, "RunnerTaskRoleArn"))
                .count(),
            1,
            "{role}: {trust}"
        );
        let sends = iam_statements(&template)
            .into_iter()
            .filter(|(owner, s)| owner == role && mentions(&s["Action"], "sqs:SendMessage") && &s["Resource"] == queue)
            .count();
        assert_eq!(sends, 1, "{role} may send to the overflow queue, once");
    }

    // The third function, not marked, on a role of its own: nothing.
    let health = attachment(&template, "HealthLambdaFunction");
    assert_eq!(health.role.as_deref(), Some("HealthRole"));
    assert!(
        health.retries.is_none() && health.on_failure.is_null() && health.dead_letter.is_null(),
        "{health:?}"
    );
    assert!(!health.tagged && !health.role_tagged, "{health:?}");
    assert!(health.trusted.is_empty() && health.may_send_to.is_empty(), "{health:?}");
    let health_role = resource(&template, "HealthRole");
    assert!(
        !mentions(health_role, "immortal") && !mentions(health_role, "sqs:"),
        "{health_role}"
    );
    // Nothing the dead-letter route would add.
    assert!(!mentions(&template["Resources"], "ImmortalDlq"));
}

#[test]
fn via_dead_letter_gives_the_function_a_dead_letter_queue_of_its_own() {
    let service = sample_with_report("immortal: { via: deadLetter, relaunch: 'timeout,error' }");
    let (template, _) = package(service.path(), &[]);
    let overflow = overflow();
    let report = attachment(&template, "ReportLambdaFunction");
    let queue = report.assert_by_dead_letter(&template, "report", &json!("sample-test-report"), &overflow);
    assert_eq!(queue, "ReportImmortalDlq");
    // The function's own relaunch setting is recorded on it (see the README for what
    // reads it).
    let tags = &resource(&template, "ReportLambdaFunction")["Properties"]["Tags"];
    assert!(
        tags.as_array()
            .unwrap()
            .contains(&json!({"Key": "immortal:relaunch", "Value": "timeout+error"})),
        "{tags}"
    );
    // The other marked function keeps the default route.
    attachment(&template, "RenderLambdaFunction").assert_by_destination("render", &overflow);
}

/// Packages `service` and returns what osls printed; asserts it failed.
fn failed_packaging(service: tempfile::TempDir) -> String {
    let out = osls(service.path(), &["package", "--stage", "test", "--region", "us-east-1"]);
    assert!(!out.status.success(), "packaging should fail:\n{}", printed(&out));
    printed(&out)
}

#[test]
fn an_unknown_or_invalid_setting_fails_packaging_naming_it() {
    let printed = failed_packaging(sample_with_report("immortal: { vai: deadLetter }"));
    assert!(
        printed.contains("functions.report.immortal has the unknown key 'vai' (known keys: stack, relaunch, via)"),
        "{printed}"
    );
    let printed = failed_packaging(sample_with_report("immortal: { via: deadletter }"));
    assert!(
        printed.contains("functions.report.immortal.via is \"deadletter\"; it must be one of: destination, deadLetter"),
        "{printed}"
    );
    let printed = failed_packaging(sample_with_report("immortal: { relaunch: 'timeout,sometimes' }"));
    assert!(printed.contains("functions.report.immortal.relaunch"), "{printed}");
    let printed = failed_packaging(sample_with_report("immortal: true\n    maximumRetryAttempts: 2"));
    assert!(
        printed.contains("functions.report.maximumRetryAttempts is 2"),
        "{printed}"
    );
    let printed = failed_packaging(sample_service(|yml| {
        format!("{yml}\ncustom:\n  immortal:\n    stak: shared\n")
    }));
    assert!(
        printed.contains("custom.immortal has the unknown key 'stak'"),
        "{printed}"
    );
}

#[test]
fn a_role_the_service_does_not_define_gets_a_warning_naming_the_statements_to_add() {
    let service = sample_service(|yml| {
        yml.replacen(
            "    role: RenderRole\n",
            "    role: arn:aws:iam::123456789012:role/shared-renderer\n",
            1,
        )
    });
    let (template, printed) = package(service.path(), &[]);
    for expected in [
        "functions.render runs as the role \"arn:aws:iam::123456789012:role/shared-renderer\", which this service does not define",
        r#""Principal":{"AWS":"<the value of the export immortal-test-RunnerTaskRoleArn"#,
        r#""Action":"sqs:SendMessage","Resource":"<the value of the export immortal-test-OverflowQueueArn"#,
        "the tag immortal:enabled=true",
    ] {
        assert!(printed.contains(expected), "{expected} in:\n{printed}");
    }
    // The function itself is attached all the same; the role it no longer uses is not touched.
    let render = attachment(&template, "RenderLambdaFunction");
    assert!(render.tagged && render.retries == Some(0), "{render:?}");
    assert_eq!(render.on_failure, overflow().queue);
    assert!(!mentions(resource(&template, "RenderRole"), "immortal"));
}

#[test]
fn serverless_immortal_lists_the_attached_functions() {
    let service = sample_with_report("immortal: { via: deadLetter }");
    let out = osls(service.path(), &["immortal", "--stage", "test"]);
    assert!(out.status.success(), "{}", printed(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "immortal: 2 of 3 functions attached", "{text}");
    assert!(
        lines[1].starts_with("  report (sample-test-report): via deadLetter to stack immortal-test")
            && lines[1].ends_with("runs as the service's shared role (IamRoleLambdaExecution)"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("  render (sample-test-render): via destination to stack immortal-test")
            && lines[2].ends_with("runs as its role RenderRole"),
        "{text}"
    );
    assert_eq!(lines[3], "  health: not attached", "{text}");
}

#[test]
fn the_npm_package_holds_only_the_plugin_and_works_installed_alone() {
    let packs = tempfile::tempdir().unwrap();
    let plugin = repo().join("serverless-immortal");
    let report = npm(
        &plugin,
        &["pack", "--json", "--pack-destination", packs.path().to_str().unwrap()],
    );
    let report: Value = serde_json::from_str(&report).unwrap();
    let mut files: Vec<&str> = report[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "README.md",
            "index.js",
            "lib/attach.js",
            "lib/settings.js",
            "package.json"
        ]
    );
    let tarball = packs.path().join(report[0]["filename"].as_str().unwrap());

    // A fresh service: its own package.json, the packed plugin, one attached function
    // and a service-wide default stack.
    let service = tempfile::tempdir().unwrap();
    std::fs::write(
        service.path().join("package.json"),
        r#"{"name": "fresh", "private": true}"#,
    )
    .unwrap();
    std::fs::write(
        service.path().join("handler.js"),
        "exports.handler = async (event) => event;\n",
    )
    .unwrap();
    std::fs::write(
        service.path().join("serverless.yml"),
        "service: fresh\nframeworkVersion: '3'\nplugins:\n  - serverless-immortal\n\
         provider:\n  name: aws\n  runtime: nodejs22.x\n\
         custom:\n  immortal:\n    stack: shared-overflow\n\
         functions:\n  job:\n    handler: handler.handler\n    immortal: true\n",
    )
    .unwrap();
    npm(service.path(), &["install", tarball.to_str().unwrap()]);
    let installed = service.path().join("node_modules/serverless-immortal");
    assert!(
        installed.is_dir() && !installed.is_symlink(),
        "a copy from the tarball, not a link to the repository"
    );
    let (template, _) = package(service.path(), &[]);
    attachment(&template, "JobLambdaFunction")
        .assert_by_destination("job", &Overflow::imported_from("shared-overflow"));
}

/// The fenced block that follows `<!-- checked: NAME -->` in README.md or, failing that,
/// in the first docs/*.md (in name order) that has the marker.
fn readme_snippet(name: &str) -> String {
    let marker = format!("<!-- checked: {name} -->");
    let mut docs: Vec<_> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    let text = std::iter::once(repo().join("README.md"))
        .chain(docs)
        .map(|path| std::fs::read_to_string(path).unwrap())
        .find(|text| text.contains(&marker))
        .unwrap_or_else(|| panic!("README.md, docs/*.md: no {marker}"));
    let after = &text[text.find(&marker).unwrap() + marker.len()..];
    let fence = after.find("```").unwrap();
    let body = &after[fence..];
    let start = body.find('\n').unwrap() + 1;
    let end = body[start..].find("\n```").unwrap();
    body[start..start + end + 1].to_owned()
}

/// Runs Python code with `input` on its standard input and returns its JSON output.
fn python_json(code: &str, input: &Path) -> Value {
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .args(["-c", code])
        .arg(input)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(out.status.success(), "python: {}", printed(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A CloudFormation (or SAM) file as the JSON CloudFormation deploys: decoded by
/// cfn-lint's parser (short-form intrinsics), SAM transformed by AWS's translator.
const CLOUDFORMATION_JSON: &str = r#"
import json, sys
from cfnlint.decode import decode
template, problems = decode(sys.argv[1])
assert not problems, problems
if template.get("Transform") == "AWS::Serverless-2016-10-31":
    from samtranslator.translator.transform import transform
    class NoManagedPolicies:
        def load(self):
            return {}
    template = transform(json.loads(json.dumps(template)), {}, NoManagedPolicies())
print(json.dumps(template))
"#;

#[test]
fn the_readme_cloudformation_and_sam_snippets_attach_a_function_and_pass_cfn_lint() {
    let dir = tempfile::tempdir().unwrap();
    for (name, function) in [("cloudformation", "Report"), ("sam", "Report")] {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, readme_snippet(name)).unwrap();
        cfn_lint(&path);
        let template = python_json(CLOUDFORMATION_JSON, &path);
        attachment(&template, function).assert_by_destination(name, &Overflow::imported_from("immortal-dev"));
    }
}

#[test]
fn the_readme_terraform_snippet_parses_and_holds_the_four_additions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("attach.tf");
    std::fs::write(&path, readme_snippet("terraform")).unwrap();
    let parsed = python_json(
        "import hcl2, json, sys\n\
         options = hcl2.SerializationOptions(strip_string_quotes=True, with_comments=False)\n\
         print(json.dumps(hcl2.loads(open(sys.argv[1]).read(), serialization_options=options)))",
        &path,
    );
    let resource = |kind: &str, name: &str| -> Value {
        parsed["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|r| r.get(kind).and_then(|r| r.get(name)).cloned())
            .unwrap_or_else(|| panic!("no {kind}.{name} in {parsed}"))
    };
    let exports = parsed["data"].to_string();
    for export in ["-OverflowQueueArn", "-RunnerTaskRoleArn"] {
        assert!(exports.contains(export), "{exports}");
    }
    let config = resource("aws_lambda_function_event_invoke_config", "report");
    assert_eq!(config["maximum_retry_attempts"], 0, "{config}");
    assert!(
        mentions(
            &config["destination_config"],
            "data.aws_cloudformation_export.overflow_queue.value"
        ),
        "{config}"
    );
    assert!(
        mentions(&config["depends_on"], "aws_iam_role_policy.report_overflow"),
        "{config}"
    );
    let function = resource("aws_lambda_function", "report");
    assert!(mentions(&function["tags"], "immortal:enabled"), "{function}");
    let role = resource("aws_iam_role", "report");
    assert!(mentions(&role["tags"], "immortal:enabled"), "{role}");
    assert!(
        mentions(
            &role["assume_role_policy"],
            "data.aws_cloudformation_export.runner_role.value"
        ),
        "{role}"
    );
    let policy = resource("aws_iam_role_policy", "report_overflow");
    assert!(
        mentions(&policy["policy"], "sqs:SendMessage")
            && mentions(&policy["policy"], "data.aws_cloudformation_export.overflow_queue.value"),
        "{policy}"
    );
}
