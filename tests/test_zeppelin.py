"""The Zeppelin importer on real notes from apache/zeppelin (both layouts) and on small notes built for the edge cases."""
import ast, json, subprocess
from pathlib import Path

import nbformat
import pytest
from hypothesis import given, settings, strategies as st

from helpers import BIN
from nutrino_ml.zeppelin import ZeppelinError, fill_forms, import_zeppelin, note_to_notebook, parse_note, py_string, read_note, summary_line

DATA = Path(__file__).parent / "data" / "zeppelin"
OLD = DATA / "matplotlib-python-pyspark_0.8_note.json"
SQL = DATA / "3. Spark SQL (PySpark)_2EWM84JXA.zpln"
IPY = DATA / "1. IPython Basic_2EYDJKFFY.zpln"
CHURN = DATA / "customer-churn_0.8_note.json"  # written for these tests in Zeppelin 0.8's layout: bare paragraphs, forms
FEATS = DATA / "Churn model features_2JQ8ZK4VX.zpln"  # the same in 0.9's layout, default group spark, a note form
SPARK_CELL = "from pyspark.sql import SparkSession"


def raw(path):
    return json.loads(path.read_text(encoding="utf-8"))


def convert(path, tmp_path):
    """Import `path` into a fresh file; return (summary, notebook as read back from disk, the raw note)."""
    dst = tmp_path / (path.stem[:20].replace(" ", "_") + ".ipynb")
    summary = import_zeppelin(path, dst)
    nb = nbformat.read(dst, as_version=4)
    nbformat.validate(nb)
    return summary, nb, raw(path)


def sources(nb, kind=None):
    return [c.source for c in nb.cells if kind is None or c.cell_type == kind]


def sql_query(src):
    """The query of a generated `spark.sql(<literal>).show()` cell, as Python evaluates it."""
    call = ast.parse(src).body[0].value  # .show()
    inner = call.func.value  # spark.sql(...)
    assert (call.func.attr, inner.func.value.id, inner.func.attr) == ("show", "spark", "sql")
    return ast.literal_eval(inner.args[0])


def assert_common(nb, note):
    """What every imported note has: a title cell with skip_exec front matter, no outputs, no interpreter lines."""
    head = nb.cells[0]
    assert head.cell_type == "markdown" and head.source.startswith("# ") and head.source.rstrip().endswith("- skip_exec: true")
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None
    interpreter_lines = {t.split("\n", 1)[0].strip() for p in note["paragraphs"] if (t := p.get("text") or "").startswith("%")}
    first_lines = {c.source.split("\n", 1)[0].strip() for c in nb.cells}
    assert not interpreter_lines & first_lines, interpreter_lines & first_lines
    assert len({c.id for c in nb.cells}) == len(nb.cells)


def test_08_note_json(tmp_path):
    s, nb, note = convert(OLD, tmp_path)
    assert (s["layout"], s["paragraphs"]) == ("0.8", {"code": 13, "sql": 0, "markdown": 5, "unconverted": 0, "empty": 1})
    assert (s["unconverted"], s["spark_session"], s["cells"]) == ([], True, 30)
    assert_common(nb, note)
    assert nb.cells[0].source.splitlines()[0] == "# Matplotlib (Python • PySpark)"  # the name without its folder
    assert SPARK_CELL in nb.cells[1].source
    assert nb.cells[2].source.startswith("## Introduction\nIn this tutorial")
    assert nb.cells[3].source == "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])"
    # every titled paragraph is shown in Zeppelin: its heading comes right before its code
    code = sources(nb)
    for title, src in [("First line", "plt.close() # Added here"), ("Second line", "plt.plot([3, 2, 1], label=r'$y=3-x$')"),
                       ("First line (figure will be displayed here)", "import matplotlib.pyplot as plt\nplt.close()")]:
        i = code.index(f"## {title}")
        assert code[i + 1].startswith(src), title
    assert code.count("## Add title") == 2
    assert sum(c.cell_type == "code" for c in nb.cells) == 1 + 13


def test_09_spark_sql_note(tmp_path):
    s, nb, note = convert(SQL, tmp_path)
    assert (s["name"], s["layout"]) == ("3. Spark SQL (PySpark)", "0.9")
    assert s["paragraphs"] == {"code": 13, "sql": 2, "markdown": 4, "unconverted": 1, "empty": 1}
    assert (s["unconverted"], s["spark_session"], s["cells"]) == (["spark.conf"], True, 37)
    assert_common(nb, note)
    assert SPARK_CELL in nb.cells[1].source
    src = sources(nb)
    # %spark.sql → spark.sql with the exact query, after its title
    sql = [x for x in src if x.startswith("spark.sql(")]
    assert [sql_query(x) for x in sql] == ["show tables", "select country, count(1) as count from people group by country"]
    assert src[src.index(sql[0]) - 1] == "## Show Tables"
    # %spark.conf → every line commented, under a line naming the interpreter; its title kept
    conf = next(x for x in sources(nb, "code") if "%spark.conf" in x)
    assert conf.splitlines()[0] == "# Zeppelin %spark.conf paragraph: not converted, kept as comments"
    assert ast.parse(conf).body == [] and all(line.startswith("#") for line in conf.splitlines())
    assert "# # master yarn-cluster" in conf.splitlines()
    assert src[src.index(conf) - 1] == "## Spark Configuration"
    # %spark.pyspark → the script as Zeppelin ran it (trimmed), after its title
    script = note["paragraphs"][14]["text"].split("\n", 1)[1].strip()
    assert src[src.index("## Use SQL directly") + 1] == script
    # titles shown in Zeppelin are kept, hidden ones ('Prerequisites', 'Visualize DataFrame/Dataset') are not
    titles = [x.splitlines()[0] for x in src if x.startswith("## ")]
    assert "## Introduction" in titles and "## Visualize DataFrame/Dataset via z.show" in titles
    assert "## Prerequisites" not in titles and "## Visualize DataFrame/Dataset" not in titles
    assert len(titles) == 17
    assert summary_line(s).endswith(": 37 cells from 21 paragraphs: 13 code, 2 SQL, 4 markdown, 1 not converted (spark.conf), 1 empty dropped")


def test_09_ipython_note(tmp_path):
    s, nb, note = convert(IPY, tmp_path)
    assert s["paragraphs"] == {"code": 5, "sql": 0, "markdown": 8, "unconverted": 0, "empty": 1}
    assert (s["spark_session"], s["cells"]) == (False, 16)
    assert_common(nb, note)
    assert not any(SPARK_CELL in x for x in sources(nb))
    code = sources(nb, "code")
    assert code == ["import sys\n\nsys?", "import sys\n\nhelp(sys)", "%timeit range(1000)", "z.input(name='my_name', defaultValue='hello')",
                    "import pandas as pd\ndf = pd.DataFrame({'name':['a','b','c'], 'count':[12,24,18]})\nz.show(df)"]
    assert sources(nb, "markdown")[1].startswith("## Introduction\n\nIPython is more powerful")


def test_layouts_read_the_same_way(tmp_path):
    for path, layout, default in [(OLD, "0.8", None), (SQL, "0.9", "spark"), (IPY, "0.9", "spark"), (CHURN, "0.8", None), (FEATS, "0.9", "spark")]:
        note = read_note(path)
        assert (note["layout"], note["default_interpreter"]) == (layout, default), path.name
        assert [p["index"] for p in note["paragraphs"]] == list(range(len(raw(path)["paragraphs"]))), path.name
        assert note_to_notebook(note) == note_to_notebook(raw(path)), path.name  # a raw note converts the same way


def test_refuses_to_overwrite_unless_asked(tmp_path):
    dst = tmp_path / "nb.ipynb"
    dst.write_text("keep me")
    with pytest.raises(ZeppelinError, match="nb.ipynb exists; pass overwrite=True"):
        import_zeppelin(IPY, dst)
    assert dst.read_text() == "keep me"
    assert import_zeppelin(IPY, dst, overwrite=True)["cells"] == 16
    nbformat.validate(nbformat.read(dst, as_version=4))
    with pytest.raises(ZeppelinError, match="must end in .ipynb"):
        import_zeppelin(IPY, tmp_path / "nb.py")
    with pytest.raises(ZeppelinError, match="does not exist"):
        import_zeppelin(IPY, tmp_path / "no" / "nb.ipynb")


def test_nbdev_test_skips_an_imported_notebook(tmp_path):
    from nbdev.test import test_nb
    note = {"name": "Would fail", "paragraphs": [{"text": "%python\nraise RuntimeError('executed')"}]}
    dst = tmp_path / "imported.ipynb"
    nbformat.write(note_to_notebook(note), dst)
    assert test_nb(dst) == (True, 0)


# ---- small notes for the edge cases ----

def one(text, config=None, **note):
    """The cells (after the title cell) of a note with a single paragraph `text` (and `config`)."""
    nb = note_to_notebook(parse_note({"name": "t", "paragraphs": [{"id": "p0", "text": text, **({"config": config} if config else {})}], **note}))
    nbformat.validate(nb)
    return [c for c in nb.cells[1:] if SPARK_CELL not in c.source]


@pytest.mark.parametrize("note, kind, source", [
    pytest.param({}, "code", "x = 1", id="no default (0.8): python"),
    pytest.param({"defaultInterpreterGroup": "python"}, "code", "x = 1", id="python"),
    pytest.param({"defaultInterpreterGroup": "md"}, "markdown", "x = 1", id="md"),
    pytest.param({"defaultInterpreterGroup": "spark"}, "code",
                 "# Zeppelin %spark paragraph (the note's default interpreter): not converted, kept as comments\n# x = 1", id="spark"),
])
def test_no_interpreter_line_uses_the_default(note, kind, source):
    [c] = one("\n  x = 1\n", **note)
    assert (c.cell_type, c.source) == (kind, source)


SCALA = "# Zeppelin scala paragraph (no interpreter line: its editor's language): not converted, kept as comments\n# x = 1"


@pytest.mark.parametrize("config, kind, source", [
    pytest.param({"editorSetting": {"language": "scala"}, "editorMode": "ace/mode/scala"}, "code", SCALA, id="scala"),
    pytest.param({"editorMode": "ace/mode/scala"}, "code", SCALA, id="scala, mode only (0.6/0.7)"),
    pytest.param({"editorSetting": {"language": "python"}, "editorMode": "ace/mode/python"}, "code", "x = 1", id="python"),
    pytest.param({"editorSetting": {"language": "sql"}, "editorMode": "ace/mode/sql"}, "code", 'spark.sql("""x = 1""").show()', id="sql"),
    pytest.param({"editorSetting": {"language": "markdown"}, "editorMode": "ace/mode/markdown"}, "markdown", "x = 1", id="markdown"),
    pytest.param({"editorSetting": {"language": "r"}, "editorMode": "ace/mode/r"}, "code",
                 "# Zeppelin r paragraph (no interpreter line: its editor's language): not converted, kept as comments\n# x = 1", id="r"),
    pytest.param({"editorSetting": {"language": "scala"}, "editorMode": "ace/mode/python"}, "code", SCALA, id="the language wins"),
    pytest.param({"editorSetting": {}, "editorMode": "ace/mode/python"}, "code", "x = 1", id="mode when no language"),
    pytest.param({"editorMode": None, "title": False}, "code", "x = 1", id="nothing recorded: python"),
])
def test_without_a_default_group_the_editor_decides(config, kind, source):
    for note in ({}, {"defaultInterpreterGroup": ""}):
        [c] = one("\n  x = 1\n", config, **note)
        assert (c.cell_type, c.source) == (kind, source), note


@pytest.mark.parametrize("group, kind, source", [
    ("spark", "code", "# Zeppelin %spark paragraph (the note's default interpreter): not converted, kept as comments\n# x = 1"),
    ("python", "code", "x = 1"), ("pyspark", "code", "x = 1"), ("md", "markdown", "x = 1"),
])
def test_a_default_group_beats_the_editor(group, kind, source):
    for mode in ("python", "scala", "sql", "markdown"):
        [c] = one("x = 1", {"editorSetting": {"language": mode}, "editorMode": f"ace/mode/{mode}"}, defaultInterpreterGroup=group)
        assert (c.cell_type, c.source) == (kind, source), mode


def test_a_paragraph_with_an_interpreter_line_ignores_its_editor():
    [c] = one("%pyspark\nx = 1", {"editorMode": "ace/mode/scala"})
    assert c.source == "x = 1"


def test_08_note_without_default_group(tmp_path):
    s, nb, note = convert(CHURN, tmp_path)
    assert (s["name"], s["layout"]) == ("Analytics/Customer churn (March)", "0.8")
    assert s["paragraphs"] == {"code": 2, "sql": 2, "markdown": 2, "unconverted": 1, "empty": 1}
    assert (s["unconverted"], s["spark_session"], s["cells"]) == (["spark"], True, 12)
    assert_common(nb, note)
    src = sources(nb)
    assert src[2].startswith("## Customer churn, March snapshot\nWhich customers")  # %md, its hidden title 'Intro' not shown
    # bare ace/mode/scala → Scala, commented, named by its editor, after its shown title
    assert src[3:5] == ["## Load customers", "# Zeppelin scala paragraph (no interpreter line: its editor's language): not converted, kept as comments\n"
                        '# val customers = spark.read.parquet("s3://acme-lake/customers/")\n# customers.createOrReplaceTempView("customers")\n# customers.printSchema()']
    assert ast.parse(src[4]).body == []
    assert src[5:7] == ["## Active customers", 'from pyspark.sql import functions as F\nactive = spark.table("customers").where(F.col("status") == "active")\nprint(active.count())']
    # %sql with a text box and a select: their defaults (not the last-used params 45 / paused), named in comments
    assert src[7] == "## Churn by status"
    assert src[8].splitlines()[:3] == ["# Zeppelin dynamic forms, set to their defaults:", "#   maxAge = '30'  (textbox ${maxAge=30})",
                                       "#   status = 'churned'  (select ${status=churned,active|churned|paused})"]
    assert sql_query(src[8]) == "select status, count(*) as customers, avg(balance) as balance\nfrom customers\nwhere age < 30 and status = 'churned'\ngroup by status"
    # bare ace/mode/python → code; bare ace/mode/sql → SQL, checkbox defaults joined, a form without default kept and flagged
    assert src[9] == 'import matplotlib\nmatplotlib.use("Agg")\nprint(matplotlib.__version__)'
    assert src[10].splitlines()[:3] == ["# Zeppelin dynamic forms, set to their defaults:", "#   plan = 'basic,pro'  (checkbox ${checkbox:plan=basic|pro,basic|pro|enterprise})",
                                        "#   minTenure (textbox) has no default: ${minTenure} is left in the query, fill it in"]
    assert sql_query(src[10]) == "select plan, count(*) as churned\nfrom customers\nwhere plan in (basic,pro)\n  and tenure_months >= ${minTenure}\ngroup by plan"
    # bare ace/mode/markdown → markdown; the trailing empty paragraph is dropped
    assert nb.cells[11].cell_type == "markdown" and src[11] == "## Next steps\n* join the support tickets\n* compare with the February snapshot"
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "markdown", "markdown", "code", "markdown", "code", "markdown", "code", "code", "code", "markdown"]


def test_09_note_with_default_group_spark(tmp_path):
    s, nb, note = convert(FEATS, tmp_path)
    assert (s["name"], s["layout"]) == ("Churn model features", "0.9")
    assert s["paragraphs"] == {"code": 2, "sql": 1, "markdown": 1, "unconverted": 2, "empty": 0}
    assert (s["unconverted"], s["spark_session"], s["cells"]) == (["spark", "sh"], True, 11)
    assert_common(nb, note)
    src = sources(nb)
    assert src[2].startswith("# Churn model features\nFeatures for")
    # bare paragraph, default group spark → Scala, commented as the note's default interpreter
    assert src[3:5] == ["## Event types", "# Zeppelin %spark paragraph (the note's default interpreter): not converted, kept as comments\n"
                        '# import org.apache.spark.sql.functions._\n# val events = spark.table("lake.events")\n# events.groupBy("event_type").count().show()']
    assert src[5] == "## Per-customer features" and src[6].startswith("from pyspark.sql import functions as F\n\nevents = ")
    # %spark.sql: the note form $${snapshot} and two paragraph forms (one with display names) take their defaults
    assert src[7] == "## Feature table"
    assert src[8].splitlines()[:4] == ["# Zeppelin dynamic forms, set to their defaults:", "#   snapshot = '2024-03-31'  (note form $${snapshot=2024-03-31})",
                                       "#   minEvents = '5'  (textbox ${minEvents=5})", "#   segment = 'all'  (select ${segment(Segment)=all,all(All customers)|smb|enterprise})"]
    assert sql_query(src[8]) == ("select f.customer_id, f.n_events, c.segment\nfrom features f join lake.customers c using (customer_id)\n"
                                 "where c.snapshot_date = '2024-03-31'\n  and f.n_events >= 5\n  and c.segment = 'all'")
    assert src[9].startswith("import pandas as pd\n")
    assert src[10] == "# Zeppelin %sh paragraph: not converted, kept as comments\n# hdfs dfs -ls /warehouse/lake.db/features | tail -n 3"


@pytest.mark.parametrize("query, filled, defaults", [
    ("select ${a=1}", "select 1", [("a", "1")]),
    ("select ${a(Alpha)=1}", "select 1", [("a", "1")]),
    ("where c = '${c=US(United States),US(United States)|UK}'", "where c = 'US(United States)'", [("c", "US(United States)")]),
    ("in (${checkbox:c=US|UK,US|UK|JP})", "in (US,UK)", [("c", "US,UK")]),
    ("in ('${checkbox( or ):c(Country)=US|JP,US(United States)|UK|JP}')", "in ('US or JP')", [("c", "US or JP")]),
    ("in (${checkbox:c=XX,US|UK})", "in (XX)", [("c", "XX")]),  # no valid default: Zeppelin keeps them as written
    ("$${d=2024-01-01} and ${d=x}", "2024-01-01 and x", [("d", "2024-01-01"), ("d", "x")]),
    ("${a} ${password:pw} ${text:b=1}", "${a} ${password:pw} ${text:b=1}", [("a", None), ("pw", None), ("b", None)]),
    ("${a=1} ${a=1}", "1 1", [("a", "1")]),
    ("t_${s=x}", "tx", [("s", "x")]),  # Zeppelin's hidden form takes the underscore with it
    ("x = ${}", "x = ${}", [("", None)]),
    ("no forms: $x {y} $ {z}", "no forms: $x {y} $ {z}", []),
])
def test_fill_forms(query, filled, defaults):
    q, forms = fill_forms(query)
    assert (q, [(f["name"], f["default"]) for f in forms]) == (filled, defaults)


def test_form_comments_are_one_line_each_and_never_code():
    [c] = one("%sql\nselect ${x=a\nb} ${y\r\n}, ${z=\0}")
    lines = c.source.splitlines()
    assert lines[:4] == ["# Zeppelin dynamic forms, set to their defaults:", "#   x = 'a\\nb'  (textbox ${x=a b})",
                         "#   y (textbox) has no default: ${y } is left in the query, fill it in", "#   z = '\\x00'  (textbox ${z=\\x00})"]
    assert sql_query(c.source) == "select a\nb ${y\r\n}, \0"


@pytest.mark.parametrize("intp", ["sh", "angular", "spark", "jdbc", "flink.ssql", "r"])
def test_unknown_interpreters_are_commented(intp):
    [c] = one(f"%{intp}\nls -la\n\n  echo \"$HOME\"\rrm -rf /\n")
    assert c.source.splitlines()[0] == f"# Zeppelin %{intp} paragraph: not converted, kept as comments"
    assert ast.parse(c.source).body == []  # nothing runs, not even after the lone \r


@pytest.mark.parametrize("text", ["", "   \n", "%md", "%spark.pyspark\n\n\n", "%sql   ", None])
def test_empty_paragraphs_are_dropped(text):
    assert one(text) == []


def test_text_on_the_interpreter_line_and_local_properties():
    assert [c.source for c in one("%md # Hello")] == ["# Hello"]
    assert [c.source for c in one('%spark.pyspark(pool="etl, nightly") df.count()')] == ["df.count()"]


@pytest.mark.parametrize("query", [
    'select """quoted""" as x',
    "select '\\d+' rlike name from t where note = 'a\\\\b'",
    'select "a"',
    'select """"',
    "select 1 -- ends with a backslash \\",
    "select\n  *\r\nfrom t\twhere x = '''y'''",
])
def test_sql_query_kept_exactly(query):
    for intp in ("sql", "spark.sql"):
        [c] = one(f"%{intp}\n{query}\n")
        assert sql_query(c.source) == query, intp


MALFORMED = [
    ("not json {", "not JSON"),
    ("[1, 2]", "not a Zeppelin note: expected an object with a 'paragraphs' list, got a list"),
    ('{"cells": [], "nbformat": 4}', "got an object with keys ['cells', 'nbformat']"),
    ('{"paragraphs": "%md hi"}', "'paragraphs' must be a list, got a string"),
    ('{"paragraphs": [{"text": "%md ok"}, "%md hi"]}', "paragraphs[1]: a paragraph must be an object, got a string"),
    ('{"paragraphs": [{"id": "20180530-1", "title": "Load", "text": ["%python", "x"]}]}',
     "paragraphs[0] (id '20180530-1', title 'Load'): 'text' must be a string (or absent), got a list"),
    ('{"paragraphs": [{"id": "p", "text": 3}]}', "paragraphs[0] (id 'p'): 'text' must be a string (or absent), got a number"),
    ('{"paragraphs": [{"id": "p", "title": true}]}', "paragraphs[0] (id 'p'): 'title' must be a string (or absent), got a boolean"),
    ('{"paragraphs": [{"id": 7, "text": ""}]}', "paragraphs[0]: 'id' must be a string (or absent), got a number"),
    ('{"paragraphs": [{}, {"id": "q", "text": "%spark(pool=a\\nx"}]}', "paragraphs[1] (id 'q'): the interpreter's local properties '(pool=a' never close"),
    ('{"paragraphs": [], "defaultInterpreterGroup": 3}', "'defaultInterpreterGroup' must be an interpreter group name"),
    ('{"paragraphs": [], "name": ["x"]}', "the note's 'name' must be a string, got a list"),
]


@pytest.mark.parametrize("text, message", MALFORMED)
def test_malformed_notes_raise_zeppelin_error(tmp_path, text, message):
    src = tmp_path / "bad.zpln"
    src.write_text(text)
    with pytest.raises(ZeppelinError) as e:
        import_zeppelin(src, tmp_path / "out.ipynb")
    assert str(e.value).startswith(f"{src}: ") and message in str(e.value), str(e.value)
    assert not (tmp_path / "out.ipynb").exists()


def test_unreadable_files_raise_zeppelin_error(tmp_path):
    (tmp_path / "latin1.json").write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    for case, path, message in [("a missing file", tmp_path / "missing.zpln", "cannot read the note (No such file or directory)"),
                                ("a directory", tmp_path, "cannot read the note (Is a directory)"),
                                ("latin-1 text", tmp_path / "latin1.json", "not UTF-8 text")]:
        try:
            read_note(path)
        except ZeppelinError as e:
            assert message in str(e), (case, str(e))
        else:
            pytest.fail(f"{case}: read_note raised no ZeppelinError")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=16)
paragraphs = st.lists(st.fixed_dictionaries({}, optional={"text": st.none() | st.text() | json_values, "title": st.none() | st.text() | json_values,
                                                          "id": st.text(max_size=10), "config": st.fixed_dictionaries({}, optional={"title": st.booleans()})}),
                      max_size=5)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, st.fixed_dictionaries({"paragraphs": paragraphs | json_values})))
def test_any_json_gives_a_notebook_or_a_zeppelin_error(value):
    try:
        nb = note_to_notebook(parse_note(json.dumps(value)))
    except ZeppelinError as e:
        assert str(e).startswith("note: ")
        return
    nbformat.validate(nb)


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(['"', "\\", "'", "\n", "\r", "%", "\0"]))


@settings(max_examples=300, deadline=None)
@given(texts)
def test_py_string_round_trips(s):
    assert ast.literal_eval(py_string(s)) == s


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["sql", "spark.sql", "sh", "spark.conf"]), texts)
def test_any_paragraph_text_converts_safely(intp, body):
    cells = one(f"%{intp}\n{body}")
    if not body.strip():
        assert cells == []
    elif intp.endswith("sql"):
        assert sql_query(cells[0].source) == fill_forms(body.strip())[0]
    else:
        assert ast.parse(cells[0].source).body == []


def test_the_cli_writes_the_notebook_and_refuses_bad_notes_with_exit_2(tmp_path):
    dst = tmp_path / "nbs" / "13_spark_sql.ipynb"
    dst.parent.mkdir()
    ok = subprocess.run([BIN / "nutrino-ml", "import-zeppelin", str(DATA / "3. Spark SQL (PySpark)_2EWM84JXA.zpln"), "--to", str(dst)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "2 SQL" in ok.stdout and nbformat.validate(nbformat.read(dst, as_version=4)) is None
    again = subprocess.run([BIN / "nutrino-ml", "import-zeppelin", str(DATA / "3. Spark SQL (PySpark)_2EWM84JXA.zpln"), "--to", str(dst)],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "--force" in again.stderr
    bad = tmp_path / "bad.zpln"
    bad.write_text(json.dumps({"name": "n", "paragraphs": [{"id": "p1", "text": 3}]}))
    r = subprocess.run([BIN / "nutrino-ml", "import-zeppelin", str(bad), "--to", str(tmp_path / "x.ipynb")], capture_output=True, text=True)
    assert r.returncode == 2 and "paragraphs[0]" in r.stderr and "Traceback" not in r.stderr
