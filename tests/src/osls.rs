//! Serverless Framework services packaged offline with osls (from `.tools/`), cfn-lint on
//! what it generates, and readers of the generated CloudFormation: IAM statements (with
//! `Fn::Sub`, `Fn::Join` and `Fn::Split` resources as text) and what attaching a function
//! to the overflow stack put there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::emulator::Emulator;

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// Runs osls in `service` with `args`. Its AWS calls go to the emulator: it asks
/// CloudFormation about layers even when it only packages (`tests/fixtures/osls-offline.js`).
pub fn osls(service: &Path, args: &[&str]) -> Output {
    let repo = repo();
    Command::new(repo.join(".tools/node_modules/.bin/osls"))
        .current_dir(service)
        .args(args)
        .envs(Emulator::shared().env())
        .env(
            "NODE_OPTIONS",
            format!("--require {}", repo.join("tests/fixtures/osls-offline.js").display()),
        )
        .env("IMMORTAL_OSLS_DIR", repo.join(".tools/node_modules/osls"))
        .output()
        .expect("osls (scripts/setup test installs it into .tools/)")
}

/// Both output streams of a finished command, for messages.
pub fn printed(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `osls package --stage test --region us-east-1 EXTRA...` in `service`: asserts it
/// succeeded and that cfn-lint passes on the template, and returns the template and
/// everything osls printed.
pub fn package(service: &Path, extra: &[&str]) -> (Value, String) {
    let mut args = vec!["package", "--stage", "test", "--region", "us-east-1"];
    args.extend_from_slice(extra);
    let out = osls(service, &args);
    assert!(out.status.success(), "osls package failed:\n{}", printed(&out));
    let path = service.join(".serverless/cloudformation-template-update-stack.json");
    cfn_lint(&path);
    let template = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    (template, printed(&out))
}

/// Asserts that cfn-lint passes on a template, with the repository's settings
/// (`.cfnlintrc.yaml`).
pub fn cfn_lint(template: &Path) {
    let lint = Command::new("cfn-lint")
        .current_dir(repo())
        .arg(template)
        .output()
        .expect("cfn-lint (scripts/setup test installs it)");
    assert!(
        lint.status.success(),
        "cfn-lint on {}:\n{}",
        template.display(),
        printed(&lint)
    );
}

/// A copy of the plugin's sample service (`tests/fixtures/plugin-service`), its
/// serverless.yml changed by `edit`, with the plugin installed from its folder as a user
/// would: `npm install <repository>/serverless-immortal`.
pub fn sample_service(edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture = repo().join("tests/fixtures/plugin-service");
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let yml = dir.path().join("serverless.yml");
    std::fs::write(&yml, edit(std::fs::read_to_string(&yml).unwrap())).unwrap();
    npm(
        dir.path(),
        &["install", repo().join("serverless-immortal").to_str().unwrap()],
    );
    dir
}

/// The sample service with its `report` function's `immortal: true` replaced by
/// `setting` (lines of `functions.report`, indented by four spaces).
pub fn sample_with_report(setting: &str) -> tempfile::TempDir {
    const REPORT: &str = "    handler: report.handler\n    immortal: true\n";
    sample_service(|yml| {
        assert!(yml.contains(REPORT), "the sample's report function: {yml}");
        yml.replacen(REPORT, &format!("    handler: report.handler\n    {setting}\n"), 1)
    })
}

/// Runs npm offline (nothing the plugin's tests install comes from the registry) and
/// asserts it succeeded; returns its standard output.
pub fn npm(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("npm")
        .current_dir(dir)
        .args(args)
        .args(["--offline", "--no-audit", "--no-fund"])
        .output()
        .expect("npm");
    assert!(out.status.success(), "npm {args:?}:\n{}", printed(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A resource of the template.
pub fn resource<'a>(template: &'a Value, name: &str) -> &'a Value {
    template["Resources"]
        .get(name)
        .unwrap_or_else(|| panic!("no resource {name}"))
}

/// A value as a list (IAM's Action and Resource may be either).
pub fn as_list(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        Value::Null => vec![],
        other => vec![other.clone()],
    }
}

/// Every Allow statement of every IAM role and policy in the template, with the
/// resource's name. `Fn::If` statements count with both branches.
pub fn iam_statements(template: &Value) -> Vec<(String, Value)> {
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
            for statement in as_list(&doc["Statement"]).iter().flat_map(branches) {
                if statement["Effect"] == "Allow" {
                    found.push((name.clone(), statement));
                }
            }
        }
    }
    found
}

/// Both branches of an `Fn::If`, else the value itself.
fn branches(value: &Value) -> Vec<Value> {
    match value["Fn::If"].as_array() {
        Some(parts) if parts.len() == 3 => parts[1..].iter().flat_map(branches).collect(),
        _ => vec![value.clone()],
    }
}

/// The ARNs a Resource entry stands for, as text: a string as it is, `Fn::Sub`'s template,
/// `Fn::Join`'s parts joined, `Fn::Split`'s pieces, both branches of `Fn::If`; a
/// reference (`Ref`, `Fn::GetAtt`, `Fn::ImportValue`) is `{...}`, one named resource.
pub fn arn_texts(value: &Value) -> Vec<String> {
    if let Some(text) = value.as_str() {
        return vec![text.to_owned()];
    }
    if let Some(sub) = value.get("Fn::Sub") {
        let template = sub.as_str().or_else(|| sub[0].as_str()).unwrap_or_default();
        return vec![template.to_owned()];
    }
    if let Some(join) = value.get("Fn::Join") {
        let separator = join[0].as_str().unwrap_or_default();
        let parts: Vec<String> = as_list(&join[1])
            .iter()
            .map(|part| arn_texts(part).join(separator))
            .collect();
        return vec![parts.join(separator)];
    }
    if let Some(split) = value.get("Fn::Split") {
        let separator = split[0].as_str().unwrap_or(",");
        return arn_texts(&split[1])
            .iter()
            .flat_map(|text| text.split(separator).map(str::to_owned).collect::<Vec<_>>())
            .collect();
    }
    if value.get("Fn::If").is_some() {
        return branches(value).iter().flat_map(arn_texts).collect();
    }
    vec![format!("{{{value}}}")]
}

/// Whether a statement is limited to resources tagged `immortal:enabled=true`.
pub fn tag_conditioned(statement: &Value) -> bool {
    statement["Condition"]["StringEquals"]["aws:ResourceTag/immortal:enabled"] == "true"
}

/// Every function of this account and region, as the overflow stack names them for a
/// tag-conditioned statement.
pub const ANY_FUNCTION: &str = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:*";

/// Statements that let a principal read a function (`lambda:GetFunction` or
/// `lambda:GetFunctionConfiguration`) other than on functions tagged
/// `immortal:enabled=true`, described.
pub fn untagged_function_reads(statements: &[(String, Value)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (owner, statement) in statements {
        let actions = as_list(&statement["Action"]);
        let reads: Vec<&str> = actions
            .iter()
            .filter_map(Value::as_str)
            .filter(|a| ["lambda:GetFunction", "lambda:GetFunctionConfiguration", "lambda:*", "*"].contains(a))
            .collect();
        if reads.is_empty() {
            continue;
        }
        for resource in as_list(&statement["Resource"]) {
            for text in arn_texts(&resource) {
                if text != ANY_FUNCTION || !tag_conditioned(statement) {
                    problems.push(format!(
                        "{owner}: {reads:?} on {text} (only {ANY_FUNCTION} with the immortal:enabled tag condition)"
                    ));
                }
            }
        }
    }
    problems
}

/// What attaching a function to the overflow stack put in a template, as found there.
#[derive(Debug)]
pub struct Attachment {
    /// The function's event-invoke configuration's `MaximumRetryAttempts`.
    pub retries: Option<i64>,
    /// Its onFailure destination.
    pub on_failure: Value,
    /// Its DeadLetterConfig target.
    pub dead_letter: Value,
    /// Its `immortal:enabled` tag.
    pub tagged: bool,
    /// The role resource it runs as, if it is one of the template's.
    pub role: Option<String>,
    /// The AWS principals its role trusts with `sts:AssumeRole`.
    pub trusted: Vec<Value>,
    /// Its role's `immortal:enabled` tag.
    pub role_tagged: bool,
    /// What its role may `sqs:SendMessage` to.
    pub may_send_to: Vec<Value>,
}

fn has_enabled_tag(resource: &Value) -> bool {
    as_list(&resource["Properties"]["Tags"])
        .iter()
        .any(|t| t["Key"] == "immortal:enabled" && t["Value"] == "true")
}

/// What attaching the function `function` (its resource name) put in the template.
pub fn attachment(template: &Value, function: &str) -> Attachment {
    let resources = template["Resources"].as_object().unwrap();
    let config = resources
        .values()
        .find(|r| {
            r["Type"] == "AWS::Lambda::EventInvokeConfig" && r["Properties"]["FunctionName"] == json!({"Ref": function})
        })
        .map(|c| c["Properties"].clone())
        .unwrap_or(Value::Null);
    let function = resource(template, function);
    let role = function["Properties"]["Role"]["Fn::GetAtt"][0]
        .as_str()
        .map(str::to_owned);
    let role_resource = role.as_deref().map(|r| resource(template, r)).unwrap_or(&Value::Null);
    let trusted = as_list(&role_resource["Properties"]["AssumeRolePolicyDocument"]["Statement"])
        .iter()
        .filter(|s| s["Effect"] == "Allow" && as_list(&s["Action"]).contains(&json!("sts:AssumeRole")))
        .map(|s| s["Principal"]["AWS"].clone())
        .filter(|p| !p.is_null())
        .collect();
    let may_send_to = iam_statements(template)
        .into_iter()
        .filter(|(owner, s)| Some(owner) == role.as_ref() && as_list(&s["Action"]).contains(&json!("sqs:SendMessage")))
        .flat_map(|(_, s)| as_list(&s["Resource"]))
        .collect();
    Attachment {
        retries: config["MaximumRetryAttempts"].as_i64(),
        on_failure: config["DestinationConfig"]["OnFailure"]["Destination"].clone(),
        dead_letter: function["Properties"]["DeadLetterConfig"]["TargetArn"].clone(),
        tagged: has_enabled_tag(function),
        role_tagged: has_enabled_tag(role_resource),
        role,
        trusted,
        may_send_to,
    }
}

/// How a template refers to the overflow stack's parts: the stack itself by its
/// resources, an attached service by imports of the stack's exports.
#[derive(Debug)]
pub struct Overflow {
    /// The shared queue for destination records (export `OverflowQueueArn`).
    pub queue: Value,
    /// The runner's task role (`RunnerTaskRoleArn`).
    pub runner_role: Value,
    /// The parking queue (`ParkingQueueArn`).
    pub parking: Value,
    /// The forwarder (`ForwarderArn`).
    pub forwarder: Value,
    /// A dead-letter queue's trigger on the forwarder, as enabled as the stack's mode says:
    /// in the stack itself its `perMessageTasks` parameter (`true` when packaged with
    /// the defaults); in an attached service, the SSM parameter the stack declares (not
    /// an export: the stack must stay free to change it).
    pub trigger_enabled: Value,
}

/// The mode parameter's name, under the stack's name.
const MODE_PARAMETER: &str = "/immortal/{stack}/per-message-tasks";

/// The exports an attached function may import, by name (after `<stack>-`).
pub const EXPORTS: [&str; 5] = [
    "OverflowQueueArn",
    "RunnerTaskRoleArn",
    "ParkingQueueArn",
    "ForwarderArn",
    "PayloadBucket",
];

impl Overflow {
    /// The overflow stack's template's own references, read from its exports (asserting
    /// each is exported as `<stack name>-<name>`).
    pub fn exported_by(template: &Value) -> Overflow {
        let export = |name: &str| {
            let output = &template["Outputs"][name];
            assert_eq!(
                output["Export"]["Name"],
                json!({"Fn::Sub": format!("${{AWS::StackName}}-{name}")}),
                "the output {name}: {output}"
            );
            output["Value"].clone()
        };
        for name in EXPORTS {
            export(name);
        }
        let mode_parameter = MODE_PARAMETER.replace("{stack}", "${AWS::StackName}");
        let declared = template["Resources"].as_object().unwrap().values().find(|r| {
            r["Type"] == "AWS::SSM::Parameter" && r["Properties"]["Name"] == json!({"Fn::Sub": mode_parameter})
        });
        let declared = declared.unwrap_or_else(|| panic!("the stack declares the parameter {mode_parameter}"));
        assert_eq!(declared["Properties"]["Type"], "String");
        assert_eq!(declared["Properties"]["Value"], "true", "perMessageTasks by default");
        Overflow {
            queue: export("OverflowQueueArn"),
            runner_role: export("RunnerTaskRoleArn"),
            parking: export("ParkingQueueArn"),
            forwarder: export("ForwarderArn"),
            trigger_enabled: json!(true),
        }
    }

    /// An attached service's references: imports from the stack `stack`.
    pub fn imported_from(stack: &str) -> Overflow {
        let import = |name: &str| json!({"Fn::ImportValue": format!("{stack}-{name}")});
        Overflow {
            queue: import("OverflowQueueArn"),
            runner_role: import("RunnerTaskRoleArn"),
            parking: import("ParkingQueueArn"),
            forwarder: import("ForwarderArn"),
            trigger_enabled: json!(format!(
                "{{{{resolve:ssm:{}}}}}",
                MODE_PARAMETER.replace("{stack}", stack)
            )),
        }
    }
}

impl Attachment {
    /// Asserts the function is attached through a destination: one attempt, failures to
    /// the overflow queue, the tag, and a tagged role that may send there and trusts the
    /// runner's role.
    pub fn assert_by_destination(&self, name: &str, overflow: &Overflow) {
        assert_eq!(self.retries, Some(0), "{name}: one attempt in Lambda: {self:?}");
        assert_eq!(
            self.on_failure, overflow.queue,
            "{name}: failures to the overflow queue"
        );
        assert!(self.dead_letter.is_null(), "{name}: no dead-letter queue as well");
        self.assert_role(name, &overflow.queue, &overflow.runner_role);
    }

    /// Asserts the function is attached through a dead-letter queue of its own: tagged
    /// with its name and `immortal:enabled`, parked in the overflow's parking queue,
    /// triggering the forwarder. Returns the queue's resource name.
    pub fn assert_by_dead_letter(
        &self,
        template: &Value,
        name: &str,
        function_name: &Value,
        overflow: &Overflow,
    ) -> String {
        assert_eq!(self.retries, Some(0), "{name}: one attempt in Lambda: {self:?}");
        assert!(self.on_failure.is_null(), "{name}: no destination as well: {self:?}");
        let queue_id = self.dead_letter["Fn::GetAtt"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: a DeadLetterConfig on a queue of the stack: {self:?}"));
        let queue = resource(template, queue_id);
        let tags = &queue["Properties"]["Tags"];
        assert!(
            as_list(tags).contains(&json!({"Key": "immortal:function", "Value": function_name})),
            "{name}: its queue names it: {tags}"
        );
        assert!(
            has_enabled_tag(queue),
            "{name}: the forwarder may read its queue: {tags}"
        );
        assert_eq!(
            queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"], overflow.parking,
            "{name}: its queue parks in the overflow's parking queue"
        );
        let triggers = template["Resources"]
            .as_object()
            .unwrap()
            .values()
            .filter(|r| {
                r["Type"] == "AWS::Lambda::EventSourceMapping"
                    && r["Properties"]["EventSourceArn"] == self.dead_letter
                    && r["Properties"]["FunctionName"] == overflow.forwarder
                    && r["Properties"]["FunctionResponseTypes"] == json!(["ReportBatchItemFailures"])
                    // Off in drain mode, whose workers drain the queue.
                    && r["Properties"]["Enabled"] == overflow.trigger_enabled
            })
            .count();
        assert_eq!(
            triggers, 1,
            "{name}: its queue triggers the forwarder as the stack's mode says"
        );
        self.assert_role(name, &self.dead_letter, &overflow.runner_role);
        queue_id.to_owned()
    }
    fn assert_role(&self, name: &str, queue: &Value, runner_role: &Value) {
        assert!(self.tagged, "{name}: tagged immortal:enabled=true: {self:?}");
        assert!(self.role.is_some(), "{name}: runs as a role of the template: {self:?}");
        assert!(
            self.role_tagged,
            "{name}: its role is tagged immortal:enabled=true: {self:?}"
        );
        assert!(
            self.trusted.contains(runner_role),
            "{name}: its role trusts {runner_role}: {self:?}"
        );
        assert!(
            self.may_send_to.contains(queue),
            "{name}: its role may send to {queue}: {self:?}"
        );
    }
}
