//! PythonService.Execute against the real binary: results, errors, inputs and encodings.

#[path = "support/plugin.rs"]
mod plugin;

use plugin::{execute, result_object, Plugin};
use qntx_python_plugin::proto::PythonExecuteRequest;
use serde_json::json;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn prints_and_results_come_back() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.python().await;

    let response = execute(
        &mut client,
        "print('hello')\nimport sys\nprint('oops', file=sys.stderr)\n_result = {'n': 42}",
    )
    .await;
    assert!(response.success, "{response:?}");
    assert_eq!(response.output, "hello\n");
    assert_eq!(response.error, "");
    let object = result_object(&response);
    assert_eq!(object["success"], json!(true));
    assert_eq!(object["stdout"], json!("hello\n"));
    assert_eq!(object["stderr"], json!("oops\n"));
    assert_eq!(object["result"], json!({"n": 42}));
    assert_eq!(object["error"], json!(null));
    assert!(object["duration_ms"].is_u64());
}

/// A program larger than the work socket's buffer waits for room on the way to its worker,
/// which reads it, rather than failing or arriving cut; with the worker polling for requests
/// after an answer (the default) and sleeping at once. (For a worker that never reads it, see
/// `tests/isolation.rs`.)
#[tokio::test(flavor = "multi_thread")]
async fn a_program_larger_than_the_socket_buffer_reaches_its_worker_whole() {
    for spin in ["500", "0"] {
        let plugin = Plugin::start(&["--workers", "1", "--worker-spin-us", spin]);
        let mut client = plugin.python().await;
        let payload = "0123456789".repeat(300_000);
        let code = format!("data = '{payload}'\n[len(data), data[-3:]]");
        let response = execute(&mut client, &code).await;
        assert!(response.success, "{}", response.error);
        assert_eq!(
            result_object(&response)["result"],
            json!([3_000_000, "789"])
        );
        let response = execute(&mut client, "'next'").await;
        assert_eq!(result_object(&response)["result"], json!("next"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trailing_expression_is_the_result_unless_result_is_set() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.python().await;

    let response = execute(&mut client, "x = 20\nx * 2 + 2").await;
    assert_eq!(result_object(&response)["result"], json!(42));

    let response = execute(&mut client, "_result = 'explicit'\n1 + 1").await;
    assert_eq!(result_object(&response)["result"], json!("explicit"));

    let response = execute(&mut client, "x = 1").await;
    assert_eq!(result_object(&response)["result"], json!(null));
}

#[tokio::test(flavor = "multi_thread")]
async fn exceptions_report_the_users_own_line_numbers_and_keep_output() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.python().await;

    let code = "print('before')\n\ndef f():\n    raise ValueError('bad value')\n\nf()\n";
    let response = execute(&mut client, code).await;
    assert!(!response.success);
    assert!(
        response.error.contains("ValueError: bad value"),
        "{}",
        response.error
    );
    assert!(
        response.error.contains("line 6"),
        "call site line: {}",
        response.error
    );
    assert!(
        response.error.contains("line 4"),
        "raise line: {}",
        response.error
    );
    assert!(
        response.error.contains("raise ValueError('bad value')"),
        "source line shown: {}",
        response.error
    );
    assert!(
        !response.error.contains("qntx_runtime"),
        "no runtime frames: {}",
        response.error
    );
    assert_eq!(response.output, "before\n");
    let object = result_object(&response);
    assert_eq!(object["success"], json!(false));
    assert_eq!(object["stdout"], json!("before\n"));
    assert!(object["error"].as_str().unwrap().contains("ValueError"));

    let response = execute(&mut client, "x = 1\ny = (\n").await;
    assert!(!response.success);
    assert!(response.error.contains("SyntaxError"), "{}", response.error);
    assert!(response.error.contains("line 2"), "{}", response.error);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_run_gets_a_fresh_main_namespace_and_a_fresh_workers_modules() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.python().await;

    let response = execute(
        &mut client,
        "import json, sys\nsys.modules['json'].marker = 'warm'\nleftover = 1\n__name__",
    )
    .await;
    assert_eq!(result_object(&response)["result"], json!("__main__"));

    // The runtime's json stays imported (warm), but not as the last run left it.
    let response = execute(
        &mut client,
        "import json, sys\n[hasattr(json, 'marker'), 'leftover' in globals(), 'json' in sys.modules]",
    )
    .await;
    assert_eq!(
        result_object(&response)["result"],
        json!([false, false, true]),
        "{response:?}"
    );

    let response = execute(
        &mut client,
        "ran = False\nif __name__ == '__main__':\n    ran = True\nran",
    )
    .await;
    assert_eq!(result_object(&response)["result"], json!(true));

    // Classes defined by a program work with tools that look up their module (dataclasses).
    let code = "from dataclasses import dataclass\n@dataclass\nclass P:\n    x: int\nP(3)";
    assert_eq!(
        result_object(&execute(&mut client, code).await)["result"],
        json!({"x": 3})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_and_glyph_id_reach_the_program() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.python().await;

    let upstream = br#"{"id":"AS1","subjects":["pump-12"],"attributes":{"bar":3.25}}"#;
    let response = client
        .execute(PythonExecuteRequest {
            code: "[upstream['subjects'][0], upstream['attributes']['bar'], glyph_id]".into(),
            glyph_id: "glyph-7".into(),
            upstream_attestation: upstream.to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        result_object(&response)["result"],
        json!(["pump-12", 3.25, "glyph-7"])
    );

    let response = execute(&mut client, "upstream is None").await;
    assert_eq!(result_object(&response)["result"], json!(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_invalid_argument_with_a_message() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.python().await;

    for code in ["", "   \n"] {
        let status = client
            .execute(PythonExecuteRequest {
                code: code.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("code is empty"),
            "{}",
            status.message()
        );
    }

    let status = client
        .execute(PythonExecuteRequest {
            code: "1".into(),
            upstream_attestation: b"{not json".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("upstream_attestation is not valid JSON"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn results_are_encoded_by_the_documented_mapping() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.python().await;

    let code = r#"
import datetime, decimal, uuid
class Opaque:
    def __repr__(self):
        return "<Opaque>"
class Broken:
    def __repr__(self):
        raise RuntimeError("no repr")
cycle = []
cycle.append(cycle)
{
    "nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"),
    "set": {3, 1, 2}, "tuple": (1, "a"), "bytes": b"hi",
    "when": datetime.datetime(2026, 5, 2, 7, 41, 9), "day": datetime.date(2026, 5, 2),
    "dec": decimal.Decimal("1.10"), "big": 2**70, "opaque": Opaque(), "broken": Broken(),
    "cycle": cycle, 7: "int key",
}
"#;
    let response = execute(&mut client, code).await;
    assert!(response.success, "{response:?}");
    let result = &result_object(&response)["result"];
    assert_eq!(result["nan"], json!("NaN"));
    assert_eq!(result["inf"], json!("Infinity"));
    assert_eq!(result["ninf"], json!("-Infinity"));
    assert_eq!(result["set"], json!([1, 2, 3]));
    assert_eq!(result["tuple"], json!([1, "a"]));
    assert_eq!(result["bytes"], json!("aGk="));
    assert_eq!(result["when"], json!("2026-05-02T07:41:09"));
    assert_eq!(result["day"], json!("2026-05-02"));
    assert_eq!(result["dec"], json!("1.10"));
    assert_eq!(result["big"], json!("1180591620717411303424"));
    assert_eq!(result["opaque"], json!("<Opaque>"));
    assert_eq!(result["broken"], json!("<unrepresentable Broken>"));
    assert_eq!(result["cycle"], json!(["<cycle>"]));
    assert_eq!(result["7"], json!("int key"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sys_exit_is_reported_and_the_worker_survives() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.python().await;

    let response = execute(&mut client, "import sys\nprint('bye')\nsys.exit(3)").await;
    assert!(!response.success);
    assert!(response.error.contains("sys.exit(3)"), "{}", response.error);
    assert_eq!(response.output, "bye\n");

    let response = execute(&mut client, "import sys\n_result = 'done'\nsys.exit(0)").await;
    assert!(response.success, "{response:?}");
    assert_eq!(result_object(&response)["result"], json!("done"));
    assert_eq!(plugin::health_detail(&plugin, "worker_restarts").await, "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn output_from_c_code_and_subprocesses_is_captured_in_order() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.python().await;

    let code = "import os, sys, subprocess\nprint('python', flush=True)\nos.write(1, b'fd-level\\n')\nsubprocess.run(['echo', 'child'])\nos.write(2, b'err-level\\n')\n";
    let response = execute(&mut client, code).await;
    assert!(response.success, "{response:?}");
    assert_eq!(response.output, "python\nfd-level\nchild\n");
    assert_eq!(result_object(&response)["stderr"], json!("err-level\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn odd_programs_get_clear_errors() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.python().await;

    let response = execute(&mut client, "x = 1\0").await;
    assert!(!response.success);
    assert!(response.error.contains("null bytes"), "{}", response.error);
    assert!(
        !response.error.contains("internal error"),
        "{}",
        response.error
    );

    let response = execute(&mut client, "_result = 'x' * (40 * 1024 * 1024)").await;
    assert!(!response.success);
    assert!(
        response.error.contains("over the limit of 33554432 bytes"),
        "{}",
        response.error
    );

    let response = execute(&mut client, "def f():\n    return f()\nf()").await;
    assert!(
        response.error.contains("RecursionError"),
        "{}",
        response.error
    );

    let response = execute(&mut client, "print('\\udc80 surrogate')").await;
    assert!(response.success, "{}", response.error);
    assert_eq!(response.output, "\\udc80 surrogate\n");

    let response = execute(&mut client, "'still fine'").await;
    assert_eq!(result_object(&response)["result"], json!("still fine"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_program_that_closes_stdout_does_not_blind_the_next_one() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.python().await;
    let response = execute(
        &mut client,
        "import os, sys\nsys.stdout.flush()\nos.close(1)\nos.close(2)\n'closed'",
    )
    .await;
    assert_eq!(result_object(&response)["result"], json!("closed"));
    let response = execute(
        &mut client,
        "import os, sys\nprint('seen')\nos.write(2, b'also\\n')",
    )
    .await;
    assert_eq!(response.output, "seen\n");
    assert_eq!(result_object(&response)["stderr"], json!("also\n"));
}
