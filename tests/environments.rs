//! Real Python environments built from the variant files (scripts/make-venv), run through the
//! plugin. `.ci/run` builds the venvs and points QNTX_TEST_VENVS at them; without it these
//! tests are ignored, so plain `cargo test` stays quick on a fresh machine.

#[path = "support/plugin.rs"]
mod plugin;

use std::path::PathBuf;
use std::process::Command;

use plugin::{execute, installed_copy, result_object, Launch, Plugin};
use serde_json::json;

const NEEDS_VENVS: &str = "needs the variant venvs: run .ci/run (or set QNTX_TEST_VENVS)";

fn venv(variant: &str) -> PathBuf {
    let root = std::env::var("QNTX_TEST_VENVS").expect(NEEDS_VENVS);
    let path = PathBuf::from(root).join(variant);
    assert!(
        path.is_dir(),
        "{} is missing: run scripts/make-venv {variant}",
        path.display()
    );
    path
}

fn variant_file(variant: &str) -> String {
    format!("{}/variants/{variant}.toml", env!("CARGO_MANIFEST_DIR"))
}

fn variant_plugin(variant: &str) -> Plugin {
    let env = venv(variant).display().to_string();
    let file = variant_file(variant);
    Plugin::launch(
        Launch::default()
            .named(&format!("qntx-{variant}-plugin"))
            .args(&["--workers", "1", "--python-env", &env, "--variant", &file]),
    )
}

fn check_environment(args: &[&str]) -> (bool, String, String) {
    let (_dir, path) = installed_copy("qntx-python-plugin");
    let output = Command::new(path)
        .arg("--check-environment")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the variant venvs: run .ci/run (or set QNTX_TEST_VENVS)"]
async fn bio_runs_biopython_dnachisel_and_numpy() {
    let plugin = variant_plugin("bio");
    let metadata = plugin
        .domain()
        .await
        .metadata(qntx_python_plugin::proto::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.name, "bio");
    let mut client = plugin.python().await;
    let code = r#"
from Bio.Seq import Seq
import numpy as np
from dnachisel import DnaOptimizationProblem, AvoidPattern, EnforceGCContent, EnforceTranslation

seq = Seq("ATGGCCATTGTAATGGGCCGCTGAAAGGGTGCCCGATAG")
problem = DnaOptimizationProblem(
    sequence="ATGGGATCCAAAGGATCCTTTTAA",
    constraints=[AvoidPattern("BsmBI_site"), AvoidPattern("GGATCC"), EnforceTranslation()],
)
problem.resolve_constraints()
{
    "protein": str(seq.translate()),
    "reverse_complement": str(seq.reverse_complement()[:6]),
    "gc": float(np.mean([base in "GC" for base in str(seq)])),
    "optimised_has_site": "GGATCC" in problem.sequence,
    "same_protein": str(Seq(problem.sequence).translate()) == str(Seq("ATGGGATCCAAAGGATCCTTTTAA").translate()),
}
"#;
    let response = execute(&mut client, code).await;
    assert!(response.success, "{}", response.error);
    let result = &result_object(&response)["result"];
    assert_eq!(result["protein"], json!("MAIVMGR*KGAR*"));
    assert_eq!(result["reverse_complement"], json!("CTATCG"));
    assert!(
        (result["gc"].as_f64().unwrap() - 0.564).abs() < 0.01,
        "{result}"
    );
    assert_eq!(result["optimised_has_site"], json!(false));
    assert_eq!(result["same_protein"], json!(true));
    // After the environment's first run, its worker imports the variant's packages once and
    // Health reports them.
    plugin::wait_for_detail(&plugin, "packages", "3").await;
    assert_eq!(plugin::health_detail(&plugin, "package_failures").await, "");
    assert!(
        plugin::health_detail(&plugin, "env.bio")
            .await
            .ends_with("3 packages, all import"),
        "{}",
        plugin::health_detail(&plugin, "env.bio").await
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the variant venvs: run .ci/run (or set QNTX_TEST_VENVS)"]
async fn data_runs_pandas_scipy_and_matplotlib() {
    let plugin = variant_plugin("data");
    let mut client = plugin.python().await;
    let png = tempfile::tempdir().unwrap();
    let png_path = png.path().join("plot.png");
    let code = format!(
        r#"
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from scipy import stats

frame = pd.DataFrame({{"x": [1, 2, 3, 4, 5], "y": [2.1, 3.9, 6.2, 7.8, 10.1]}})
fit = stats.linregress(frame["x"], frame["y"])
fig, ax = plt.subplots()
ax.plot(frame["x"], frame["y"])
fig.savefig({png:?})
{{"mean_y": frame["y"].mean(), "slope": round(fit.slope, 2), "rows": frame.to_dict(orient="records")[:1]}}
"#,
        png = png_path.display().to_string()
    );
    let response = execute(&mut client, &code).await;
    assert!(response.success, "{}", response.error);
    let result = &result_object(&response)["result"];
    assert!((result["mean_y"].as_f64().unwrap() - 6.02).abs() < 1e-9);
    assert_eq!(result["slope"], json!(1.99));
    assert_eq!(result["rows"], json!([{"x": 1, "y": 2.1}]));
    let bytes = std::fs::read(&png_path).expect("the PNG was written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
#[ignore = "needs the variant venvs: run .ci/run (or set QNTX_TEST_VENVS)"]
fn check_environment_lists_every_package_and_fails_naming_a_missing_one() {
    for variant in ["bio", "data"] {
        let env = venv(variant).display().to_string();
        let (ok, stdout, stderr) =
            check_environment(&["--python-env", &env, "--variant", &variant_file(variant)]);
        assert!(ok, "{variant}: {stdout}{stderr}");
        assert!(
            stdout.contains(&format!("variant {variant}: Python 3.")),
            "{stdout}"
        );
        let expected: &[&str] = if variant == "bio" {
            &["Bio ", "dnachisel ", "numpy "]
        } else {
            &["pandas ", "scipy ", "matplotlib "]
        };
        for package in expected {
            assert!(
                stdout.lines().any(|l| l.starts_with(package)),
                "{package} missing in {stdout}"
            );
        }
    }
    // The bio venv has no pandas: checking it against the data variant must fail and say so.
    let env = venv("bio").display().to_string();
    let (ok, stdout, stderr) =
        check_environment(&["--python-env", &env, "--variant", &variant_file("data")]);
    assert!(!ok);
    assert!(
        stdout.contains("pandas FAILED: ModuleNotFoundError"),
        "{stdout}"
    );
    assert!(
        stderr.contains("failed to import: pandas, scipy, matplotlib"),
        "{stderr}"
    );
}

#[test]
fn an_environment_for_another_python_is_refused_clearly() {
    let fake = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(fake.path().join("lib/python2.7/site-packages")).unwrap();
    let env = fake.path().display().to_string();
    let (ok, stdout, stderr) = check_environment(&["--python-env", &env]);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("environment 'python'")
            && stderr.contains("is for Python 2.7")
            && stderr.contains("but this plugin embeds Python 3."),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "opt-in: QNTX_TEST_ML=1 with an ml venv (torch is large)"]
async fn ml_runs_torch_and_transformers() {
    assert_eq!(
        std::env::var("QNTX_TEST_ML").as_deref(),
        Ok("1"),
        "opt-in: set QNTX_TEST_ML=1"
    );
    let plugin = variant_plugin("ml");
    let mut client = plugin.python().await;
    let code = "import torch, transformers\nt = torch.tensor([[1.0, 2.0], [3.0, 4.0]])\n[float((t @ t).sum()), bool(transformers.__version__)]";
    let response = execute(&mut client, code).await;
    assert!(response.success, "{}", response.error);
    assert_eq!(result_object(&response)["result"], json!([54.0, true]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_whose_workers_cannot_start_says_why() {
    let fake = tempfile::tempdir().unwrap();
    let env = fake.path().display().to_string();
    let plugin = Plugin::start(&["--workers", "1", "--python-env", &env]);
    let mut client = plugin.python().await;
    let status = client
        .execute(qntx_python_plugin::proto::PythonExecuteRequest {
            code: "1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("site-packages"),
        "{}",
        status.message()
    );

    let health = plugin
        .domain()
        .await
        .health(qntx_python_plugin::proto::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert!(!health.healthy);
    assert!(
        health.message.contains("no worker can start"),
        "{}",
        health.message
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the variant venvs: run .ci/run (or set QNTX_TEST_VENVS)"]
async fn health_names_the_packages_that_do_not_import() {
    // The bio venv has none of the data variant's packages.
    let env = venv("bio").display().to_string();
    let file = variant_file("data");
    let plugin = Plugin::start(&["--workers", "1", "--python-env", &env, "--variant", &file]);
    // The check runs after the environment's first run.
    plugin::wait_ready(&plugin).await;
    plugin::wait_for_detail(&plugin, "packages", "3").await;
    let failures = plugin::health_detail(&plugin, "package_failures").await;
    for package in ["pandas", "scipy", "matplotlib"] {
        assert!(
            failures.contains(&format!("{package}: ModuleNotFoundError")),
            "{failures}"
        );
    }
}
