//! Rich results with the real packages (the data variant venv, built by .ci/run): open
//! matplotlib figures come back as PNGs, DataFrame/Series/ndarray results as tables, and the
//! fields the host reads stay as they were.

#[path = "support/plugin.rs"]
mod plugin;

use plugin::{execute, result_object, Plugin};
use serde_json::json;

fn data_plugin() -> Plugin {
    let root = std::env::var("QNTX_TEST_VENVS")
        .expect("needs the variant venvs: run .ci/run (or set QNTX_TEST_VENVS)");
    let env = format!("{root}/data");
    assert!(
        std::path::Path::new(&env).is_dir(),
        "{env} is missing: run scripts/make-venv data"
    );
    Plugin::start(&["--workers", "1", "--python-env", &env])
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the variant venvs: run .ci/run (or set QNTX_TEST_VENVS)"]
async fn open_figures_are_returned_as_png_and_closed() {
    let plugin = data_plugin();
    let mut client = plugin.python().await;
    let code = "import matplotlib.pyplot as plt\n\
                plt.figure(figsize=(4, 3), dpi=50)\n\
                plt.plot([1, 2, 3])\n\
                fig, ax = plt.subplots(label='second')\n\
                plt.show()\n\
                'done'";
    let response = execute(&mut client, code).await;
    assert!(response.success, "{}", response.error);
    let object = result_object(&response);
    assert_eq!(object["result"], json!("done"), "the value is unchanged");
    assert_eq!(
        object["stderr"],
        json!(""),
        "plt.show() says nothing without a display"
    );
    let figures = object["figures"].as_array().expect("a figures list");
    assert_eq!(figures.len(), 2);
    assert_eq!(
        (&figures[0]["width"], &figures[0]["height"]),
        (&json!(200), &json!(150))
    );
    assert_eq!(figures[1]["label"], json!("second"));
    for figure in figures {
        assert_eq!(figure["format"], json!("png"));
        // "iVBORw0KGgo" is the PNG signature (\x89PNG\r\n\x1a\n) in base64.
        assert!(figure["data"].as_str().unwrap().starts_with("iVBORw0KGgo"));
    }

    // Closed after the run: the next run on the same worker has none.
    let response = execute(
        &mut client,
        "import matplotlib.pyplot as plt\nplt.get_fignums()",
    )
    .await;
    let object = result_object(&response);
    assert_eq!(object["result"], json!([]));
    assert!(object.get("figures").is_none(), "{object}");

    // A failed run still returns what it drew, and closes it.
    let response = execute(
        &mut client,
        "import matplotlib.pyplot as plt\nplt.plot([1])\n1/0",
    )
    .await;
    assert!(!response.success);
    assert_eq!(
        result_object(&response)["figures"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the variant venvs: run .ci/run (or set QNTX_TEST_VENVS)"]
async fn dataframes_series_and_arrays_are_also_tables() {
    let plugin = data_plugin();
    let mut client = plugin.python().await;
    let code = "import pandas as pd\n\
                pd.DataFrame({'x': range(120), 'name': ['a', 'b', 'c'] * 40})";
    let response = execute(&mut client, code).await;
    assert!(response.success, "{}", response.error);
    let object = result_object(&response);
    assert_eq!(
        object["result"]["x"]["119"],
        json!(119),
        "result keeps the to_dict mapping"
    );
    let table = &object["table"];
    assert_eq!(table["kind"], json!("DataFrame"));
    assert_eq!(table["columns"], json!(["x", "name"]));
    assert_eq!(table["total_rows"], json!(120));
    assert_eq!(
        table["rows"].as_array().unwrap().len(),
        50,
        "the first rows only"
    );
    assert_eq!(table["rows"][1], json!([1, "b"]));
    // pandas 3 says "str" for text where pandas 2 says "object": check the number column.
    assert_eq!(table["dtypes"][0], json!("int64"));

    let response = execute(
        &mut client,
        "import pandas as pd\npd.Series([1.5, None], name='v')",
    )
    .await;
    let table = &result_object(&response)["table"];
    assert_eq!(table["kind"], json!("Series"));
    assert_eq!(table["columns"], json!(["v"]));
    assert_eq!(table["rows"], json!([[1.5], ["NaN"]]));

    let response = execute(
        &mut client,
        "import numpy as np\nnp.arange(6).reshape(2, 3)",
    )
    .await;
    let object = result_object(&response);
    assert_eq!(object["result"], json!([[0, 1, 2], [3, 4, 5]]));
    assert_eq!(object["table"]["shape"], json!([2, 3]));
    assert_eq!(object["table"]["columns"], json!(["0", "1", "2"]));

    // A 3-D array is no table; a plain program is as before.
    let response = execute(&mut client, "import numpy as np\nnp.zeros((2, 2, 2))").await;
    assert!(result_object(&response).get("table").is_none());
    let response = execute(&mut client, "x = 1").await;
    let object = result_object(&response);
    let mut keys: Vec<_> = object.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "duration_ms",
            "error",
            "result",
            "stderr",
            "stdout",
            "success"
        ]
    );
}
