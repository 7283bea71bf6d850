"""The page in headless Chromium: real clicks and typing on pages rendered from a real run and a 50 × 40 matrix.

The real run is the fault-injection engine (a test seam for the farm, here the subject is
the page) through the real `farm run`, a real local Ray and the real store: every
outcome (pass, fail with a traceback, crash with a log, timeout) in about half a minute.
It runs twice, so the page has a history and a (quiet) diff.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from farm.model.matrix import Matrix
from farm.report.aggregate import load_matrix
from farm.store import LocalStore

from .chromium import Chromium
from .synthetic import Shape, write_runs

RENDER_BUDGET_MS = 5000  # generous: CI shares two cores with Ray and other jobs; typical is ~0.2 s

FAULT_JOB = """
name: faults
models:
  - name: tiny
    variants:
      - {quantization: none, checkpoint: fault-injection, engine_args: {fault: pass}}
      - {quantization: int4, checkpoint: fault-injection, engine_args: {fault: raise}}
      - {quantization: int8, checkpoint: fault-injection, engine_args: {fault: segfault}}
      - {quantization: fp8, checkpoint: fault-injection, engine_args: {fault: hang}}
    loras:
      - {name: attn, path: ADAPTER}
engines:
  - {name: fi, kind: fault-injection}
timeout_s: 20   # the hang cells end here; long enough for an actor to start on a busy 2-core machine
"""


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> LocalStore:
    work = tmp_path_factory.mktemp("faults")
    (work / "adapter").mkdir()
    (work / "job.yaml").write_text(FAULT_JOB.replace("ADAPTER", str(work / "adapter")))
    for run_id in ("faults-1", "faults-2"):
        proc = subprocess.run([sys.executable, "-m", "farm", "run", "job.yaml", "--store", "store", "--run-id", run_id],
                              capture_output=True, text=True, timeout=600, cwd=work)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return LocalStore(work / "store")


def page_url(store: LocalStore) -> str:
    return (store.root / "index.html").as_uri()


def open_page(browser: Chromium, store: LocalStore, fragment: str = "") -> Matrix:
    browser.open(page_url(store) + fragment)
    return load_matrix(store)


DETAIL = 'document.querySelector("#detail")'


def open_cell(browser: Chromium, cell_id: str) -> str:
    if not browser.eval('document.querySelector("#detail").hidden'):
        browser.key("Escape", key_code=27)  # as a person would, should the drawer cover the cell
        browser.wait_for('document.querySelector("#detail").hidden')
    browser.click(f'#grid td[data-id="{cell_id}"]')
    browser.wait_for(f'!document.querySelector("#detail").hidden && {DETAIL}.textContent.includes("{cell_id}")')
    return browser.text("#detail")


def linked_file(browser: Chromium, store: LocalStore, text: str) -> Path:
    href = browser.eval(f'[...document.querySelectorAll("#detail a")].find(a => a.textContent === "{text}").href')
    path = Path(unquote(urlsplit(href).path))
    assert path.is_relative_to(store.root) and path.is_file(), href
    return path


def matching_cells(browser: Chromium) -> int:
    return browser.eval("""[...document.querySelectorAll("#grid td.cell:not(.dim)")]
                           .filter(td => !td.hidden && !td.parentElement.hidden).length""")


# ---------- a real run ----------

def test_real_run_grid_has_every_outcome(browser, real_run):
    matrix = open_page(browser, real_run)
    assert browser.count("#grid td.cell") == len(matrix.cells) == 8
    assert {c.status.value for c in matrix.cells} == {"pass", "fail", "crash", "timeout"}
    for cell in matrix.cells:
        td = f'#grid td[data-id="{cell.cell_id}"]'
        assert browser.eval(f'document.querySelector(\'{td}\').classList.contains("s-{cell.status.value}")')
        assert browser.text(td).startswith(cell.symbol)
    assert "faults-2" in browser.text("#meta")


def test_real_run_failed_cell_detail(browser, real_run):
    matrix = open_page(browser, real_run)
    failed = next(c for c in matrix.cells if c.status.value == "fail")
    text = open_cell(browser, failed.cell_id)
    assert "InjectedFault" in text and "injected failure during engine build" in text
    assert failed.kind == "broken" and "fail · broken" in text
    assert f"root cause {failed.root_cause} breaks 2 cells; its variant {failed.signature} breaks 2 cells" in text
    assert "traceback (tail)" in text and "fault_injection.py" in text  # the traceback tail, from the signature group
    assert "load✗" in text.replace(" ", "")  # the probe that failed
    assert f"python{platform.python_version()}" in text.replace(" ", "")  # env facts
    result = json.loads(linked_file(browser, real_run, "result JSON").read_text())
    assert result["cell_id"] == failed.cell_id and result["status"] == "fail"


def test_real_run_passing_cell_shows_probes_and_metrics(browser, real_run):
    matrix = open_page(browser, real_run)
    passed = next(c for c in matrix.cells if c.status.value == "pass" and c.lora == "attn")
    open_cell(browser, passed.cell_id)
    probes = browser.eval("""[...document.querySelectorAll("#detail table.probes tbody tr")]
                             .map(tr => [...tr.children].map(td => td.textContent))""")
    assert [row[0] for row in probes] == ["load", "generate", "lora"]
    assert all(row[1] == "✓" for row in probes)
    prompts = len(json.loads(real_run.get(passed.result_key))["probes"][1]["outputs"])
    assert "tokens_per_s" in probes[1][3] and f"prompts_differing {prompts}" in probes[2][3]
    assert "peak RSS" in browser.text("#detail")


def test_real_run_crash_and_timeout_say_why(browser, real_run):
    matrix = open_page(browser, real_run)
    crashed = next(c for c in matrix.cells if c.status.value == "crash")
    text = open_cell(browser, crashed.cell_id)
    assert "log (last lines)" in text and "Segmentation fault" in text
    assert "Segmentation fault" in linked_file(browser, real_run, "log").read_text()
    assert "not measured" in text  # the process died before it could report its environment
    hung = next(c for c in matrix.cells if c.status.value == "timeout")
    assert "no result within 20s" in open_cell(browser, hung.cell_id)


def test_real_run_history_and_quiet_diff(browser, real_run):
    matrix = open_page(browser, real_run)
    assert [r.run_id for r in matrix.history.runs] == ["faults-1", "faults-2"]
    text = open_cell(browser, matrix.cells[0].cell_id)
    assert "History — last 2 runs" in text and "in every run on record (2)" in text
    assert browser.count("#detail .strip .run") == 2
    browser.click('.tabs [data-view="changes"]')
    assert "No regressions and no fixes." in browser.text("#view-changes")
    assert "faults-1" in browser.text("#view-changes")


# ---------- a synthetic 50 × 40 matrix ----------

def test_large_matrix_renders_light_and_fast(browser, large_store):
    matrix = open_page(browser, large_store)
    assert browser.count("#grid td.cell") == 2000
    assert browser.count("#grid tbody tr") == 50 and browser.count("#grid thead th.col") == 40
    browser.wait_for("window.farm.paintedMs")
    render_ms, painted_ms = browser.eval("[window.farm.renderMs, window.farm.paintedMs]")
    kb = len(large_store.get("index.html")) / 1024
    print(f"\n50 × 40 page: {kb:.0f} KB; script done {render_ms:.0f} ms, painted {painted_ms:.0f} ms after navigation")
    assert render_ms < RENDER_BUDGET_MS
    assert browser.text("#shown") == "50 × 40 · 2000 cells"
    assert len(matrix.cells) == 2000


def test_filter_by_status_and_read_a_cell(browser, large_store):
    matrix = open_page(browser, large_store)
    crashes = [c for c in matrix.cells if c.status.value == "crash"]
    browser.click('#status-filter .chip[data-status="crash"]')
    browser.wait_for('location.hash.includes("status=crash")')
    assert matching_cells(browser) == len(crashes)
    assert browser.text("#shown").startswith(f"{len(crashes)} of 2000 cells match")
    rows_shown = browser.count("#grid tbody tr:not([hidden])")
    assert rows_shown == len({c.row for c in crashes})
    browser.click('#status-filter .chip[data-status="timeout"]')  # statuses add up
    timeouts = [c for c in matrix.cells if c.status.value == "timeout"]
    assert matching_cells(browser) == len(crashes) + len(timeouts)
    text = open_cell(browser, crashes[0].cell_id)
    assert "crash" in text and crashes[0].model in text and "Segmentation fault" in text
    browser.click("#clear")
    assert matching_cells(browser) == 2000


def test_filter_by_axes(browser, large_store):
    matrix = open_page(browser, large_store)
    model = matrix.cells[-1].model
    browser.click('#axis-filters details[data-axis="model"] summary')
    browser.click('#axis-filters details[data-axis="model"] .all button:last-child')  # none
    assert matching_cells(browser) == 0 and "No cell matches" in browser.eval(
        'getComputedStyle(document.querySelector("#grid-wrap"), "::after").content')
    browser.click(f'#axis-filters input[data-axis="model"][value="{model}"]')
    browser.click('#axis-filters details[data-axis="engine"] summary')
    browser.click('#axis-filters details[data-axis="engine"] .all button:last-child')
    browser.click('#axis-filters input[data-axis="engine"][value="nightly"]')
    expected = [c for c in matrix.cells if c.model == model and c.engine == "nightly"]
    assert matching_cells(browser) == len(expected) > 0
    assert browser.count("#grid thead th.col:not([hidden])") == len({c.column for c in expected})
    assert browser.text('#axis-filters summary[data-axis="model"]') == "model: 1 of 10"


def test_search_box(browser, large_store):
    matrix = open_page(browser, large_store)
    group = next(g for g in matrix.signatures if g.error_type == "AttributeError")
    browser.type("#q", "SharedFusedMoE w2_weight")
    browser.wait_for('location.hash.includes("q=")')
    assert matching_cells(browser) == len(group.cells)
    browser.type("#q", group.signature, replace=True)
    browser.wait_for(f'location.hash.includes("q={group.signature}")')
    assert matching_cells(browser) == len(group.cells)


@pytest.fixture
def small_screen(browser):
    browser.viewport(900, 600)  # narrower and shorter than the 50 × 40 grid
    yield browser
    browser.viewport(1440, 900)


def test_sticky_headers_on_a_wide_matrix(small_screen, large_store):
    browser = small_screen
    open_page(browser, large_store)
    wrap = browser.rect("#grid-wrap")
    browser.scroll("#grid-wrap", left=5000, top=5000)
    browser.wait_for('document.querySelector("#grid-wrap").scrollTop > 100')
    assert browser.eval('document.querySelector("#grid-wrap").scrollLeft') > 100
    column_header = browser.rect("#grid thead th.col:last-child")
    group_header = browser.rect("#grid thead th.group:last-child")
    row_header = browser.rect("#grid tbody tr:last-child th")
    assert abs(group_header["y"] - wrap["y"]) <= 2, (group_header, wrap)
    assert abs(column_header["y"] - (group_header["y"] + group_header["height"])) <= 2
    assert abs(row_header["x"] - wrap["x"]) <= 2, (row_header, wrap)


def test_root_causes_view(browser, large_store):
    matrix = open_page(browser, large_store)
    browser.click('.tabs [data-view="causes"]')
    assert browser.count("#view-causes article.cause[data-root-cause]") == len(matrix.root_causes) > 0
    variants = sum(len(r.variants) for r in matrix.root_causes)
    assert browser.count("#view-causes article.cause[data-root-cause] .variant[data-signature]") == variants
    first = matrix.root_causes[0]
    card = f'#view-causes article[data-root-cause="{first.root_cause}"]'
    text = browser.text(card)
    assert f"breaks {len(first.cells)} cells" in text and first.message in text and first.kind in text
    assert all(signature in text for signature in first.variants)
    assert "since run" in text and ".root_causes" in browser.text("#view-causes .twin-note")
    assert f"farm repro {first.root_cause} --run {matrix.run_id}" in text
    browser.click(f"{card} .cellchip")
    browser.wait_for('!document.querySelector("#detail").hidden')
    assert first.cells[0] in browser.text("#detail") and f"cell={first.cells[0]}" in browser.eval("location.hash")


def test_failure_kinds_have_symbols_a_legend_and_a_filter(browser, large_store):
    matrix = open_page(browser, large_store)
    assert set(matrix.kind_counts) == {"refused", "broken", "wrong"}
    for kind in matrix.kinds:
        assert f"{kind.symbol}fail:{kind.kind}—" in browser.text("#legend").replace(" ", "")
        shown = [c for c in matrix.cells if c.kind == kind.kind and c.status.value == "fail"]
        td = f'#grid td[data-id="{shown[0].cell_id}"]'
        assert browser.text(td).startswith(kind.symbol) and shown[0].symbol == kind.symbol
    browser.click('#status-filter .chip[data-kind="refused"]')
    browser.wait_for('location.hash.includes("kind=refused")')
    assert matching_cells(browser) == matrix.kind_counts["refused"]
    browser.click('#status-filter .chip[data-kind="refused"]')
    browser.wait_for('!location.hash.includes("kind=")')
    assert matching_cells(browser) == len(matrix.cells)


def test_changes_view_lists_regressions_and_fixes(browser, large_store):
    matrix = open_page(browser, large_store)
    browser.click('.tabs [data-view="changes"]')
    changes = matrix.changes
    assert browser.count("table.chg-regressions tbody tr") == len(changes.regressions) > 0
    assert browser.count("table.chg-fixes tbody tr") == len(changes.fixes) > 0
    tab = f"▼{len(changes.regressions)} ▲{len(changes.fixes)} ↔{len(matrix.version_changes)}"
    assert browser.text('.tabs [data-view="changes"] .n') == tab
    browser.click("table.chg-regressions tbody tr")
    browser.wait_for('!document.querySelector("#detail").hidden')
    assert "Regression since the previous run" in browser.text("#detail")
    regressed = matrix.changes.regressions[0].cell_id
    assert "chg-regressions" in browser.eval(f'document.querySelector(\'#grid td[data-id="{regressed}"]\').className')


def test_version_groups_and_changes_across_versions(browser, large_store):
    matrix = open_page(browser, large_store)
    groups = browser.eval("""[...document.querySelectorAll("#grid thead th.group")]
                             .map(th => [th.firstChild.textContent, th.colSpan, th.title])""")
    # One column group per version, in the job's order, titled with the vLLM its cells measured.
    assert [(name, span) for name, span, _ in groups] == [(g.engine, len(g.columns)) for g in matrix.engines]
    assert len(groups) == 10 and all(title == f"{g.engine}: vLLM {', '.join(g.vllm)}" for (*_, title), g in zip(groups, matrix.engines))
    assert "0.11.2.dev" in browser.text("#grid thead th.group:last-child")  # the nightly shows the build it measured
    assert browser.eval('[...document.querySelectorAll("#grid thead th.col")].slice(0, 4).map(th => th.textContent)') == [
        "no LoRA", "attn", "mlp", "all"]
    assert browser.text("#grid thead th.corner .c-cols") == "version · LoRA"

    browser.click('.tabs [data-view="changes"]')
    assert browser.count("table.versions tbody tr") == len(matrix.version_changes) > 0
    assert ".version_changes" in browser.text("#view-changes .twin-note")
    change = next(v for v in matrix.version_changes if v.after_signature)
    cell = next(c for c in matrix.cells if (c.row, c.lora, c.engine) == (change.row, change.lora, change.engine))
    browser.click(f'table.versions tbody tr[data-id="{cell.cell_id}"]')
    browser.wait_for(f'{DETAIL}.textContent.includes("{cell.cell_id}")')
    assert f"first changed at {change.engine} ({change.previous_engine}: {change.before} → {change.engine}: {change.after})" \
        in browser.text("#detail")


def test_history_view_shows_strips(browser, large_store):
    matrix = open_page(browser, large_store, "#view=history")
    assert browser.count("#view-history table.hist thead th.run-h") == 3
    changing = [c for c, strip in matrix.history.cells.items() if len(set(strip.replace(" ", ""))) > 1]
    assert browser.count("#view-history table.hist tbody tr") == len(changing)
    browser.click("#view-history .toggle input")
    assert browser.count("#view-history table.hist tbody tr") == 500  # capped; the filters narrow it


def test_state_lives_in_the_url(browser, large_store):
    matrix = open_page(browser, large_store)
    cell = next(c for c in matrix.cells if c.status.value == "fail")
    browser.click('#status-filter .chip[data-status="fail"]')
    open_cell(browser, cell.cell_id)
    url = browser.eval("location.href")
    browser.open("about:blank", ready="true")
    browser.open(url)
    chip = '#status-filter .chip[data-status="fail"]'
    assert browser.eval(f"document.querySelector('{chip}').getAttribute('aria-pressed')") == "true"
    assert not browser.eval('document.querySelector("#detail").hidden') and cell.cell_id in browser.text("#detail")
    browser.key("Escape", key_code=27)
    browser.wait_for('document.querySelector("#detail").hidden')


# ---------- hostile results ----------

def test_hostile_strings_render_as_text(browser, tmp_path):
    store = LocalStore(tmp_path)
    write_runs(store, Shape(rows=3, columns=12, nights=2), hostile=True, job_name="<script>window.__pwned=1</script>")
    matrix = open_page(browser, store)
    for cell in matrix.cells:  # every cell's detail, with its hostile model, adapter, error, probe and env strings
        open_cell(browser, cell.cell_id)
    for view in ("causes", "changes", "history"):
        browser.click(f'.tabs [data-view="{view}"]')
    browser.click('#axis-filters details[data-axis="model"] summary')
    browser.type("#q", "<img src=x onerror=window.__pwned=1>")
    browser.wait_for('location.hash.includes("q=")')
    assert browser.count("#axis-filters details[open]") == 0  # the click into the search box closed the popover
    assert browser.eval("window.__pwned === undefined")
    assert browser.dialogs == []
    assert browser.count("img, svg, iframe, object, embed") == 0
    assert browser.count("script") == 2  # the data block and the page's own script
    assert browser.eval("document.title").startswith("farm · <script>window.__pwned=1</script>")
    hostile_model = next(c.model for c in matrix.cells if "<script>" in c.model)
    assert hostile_model in browser.text("#axis-filters")  # shown as the literal text it is
    browser.click("#clear")
    browser.click('.tabs [data-view="matrix"]')
    open_cell(browser, next(c.cell_id for c in matrix.cells if c.error_message and "onerror" in c.error_message))
    assert '"><img src=x onerror=' in browser.text("#detail")


def test_the_known_bugs_view_shows_the_published_ledger_check(browser, tmp_path):
    from farm.model.matrix import LedgerCheck, LedgerFinding
    from farm.report.ledger import publish_known_bugs

    store = LocalStore(tmp_path / "store")
    document = (Path(__file__).parents[1] / "docs" / "gpu" / "matrix.json").read_text()
    store.put("matrix/latest.json", document.encode())
    check = LedgerCheck(checked_at="2026-12-05T18:00:00+00:00", ledger="jobs/known_bugs.yaml", runs=["seed-fix-1", "gpu-smoke-1"],
                        findings=[LedgerFinding(id="seed", title="w2_weight in FusedMoEWithLoRA.__init__", verdict="rediscovered",
                                                why="every measured release agrees", evidence=["0.11.1: 4 of 4 cell(s) show it"],
                                                tracker=["vllm-project/vllm#29475"]),
                                  LedgerFinding(id="fp8", verdict="not reproducible", why="no run measured it <b>x</b>")])
    assert publish_known_bugs(store, check) == "index.html"
    open_page(browser, store, "#view=bugs")
    assert browser.text("#n-bugs") == "1/2"
    assert browser.count("#view-bugs article.bug") == 2
    seed = browser.text('#view-bugs article[data-bug="seed"]')
    assert "rediscovered" in seed and "vllm-project/vllm#29475" in seed and "0.11.1: 4 of 4 cell(s) show it" in seed
    assert "no run measured it <b>x</b>" in browser.text('#view-bugs article[data-bug="fp8"]')  # text, never markup
    assert "seed-fix-1, gpu-smoke-1" in browser.text("#view-bugs .intro")


def test_a_matrix_of_runs_on_two_platforms(browser, tmp_path):
    """`farm matrix RUN RUN --html`'s page: the platform as the top column level, its filter, its differences."""
    from farm.report.render import render_page

    from .test_versions import _merged

    matrix = _merged()
    page = tmp_path / "merged.html"
    page.write_text(render_page(matrix))
    browser.open(page.as_uri())
    platforms = browser.eval("""[...document.querySelectorAll("#grid thead tr.platforms th.platform")]
                                .map(th => [th.textContent, th.colSpan])""")
    assert platforms == [["x86_64 CPU · AMX", 6], ["NVIDIA H200 · sm_90", 4]]
    groups = browser.eval('[...document.querySelectorAll("#grid thead th.group")].map(th => [th.firstChild.textContent, th.colSpan])')
    assert groups == [["v1", 2], ["v2", 2], ["v3", 2], ["v2", 2], ["v3", 2]], "an engine name on two platforms: two groups"
    # Sticky header rows stack: the third sits below the other two.
    tops = browser.eval('[1, 2, 3].map(n => getComputedStyle(document.querySelector(`#grid thead tr:nth-child(${n}) th:not(.corner)`)).top)')
    assert tops == ["0px", "26px", "52px"]
    # Every cell of the combination that differs by platform is flagged, and its detail says how.
    flagged = {(c.row, c.lora) for c in matrix.cells
               if browser.eval(f'document.querySelector(\'#grid td[data-id="{c.cell_id}"]\').classList.contains("plat-diff")')}
    assert flagged == {("moe · none", "none")}
    gpu = next(c for c in matrix.cells if (c.row, c.lora, c.engine, c.platform) == ("moe · none", "none", "v3", "NVIDIA H200 · sm_90"))
    text = open_cell(browser, gpu.cell_id)
    assert "Across platforms: this combination's verdict differs by platform on vLLM 0.3" in text and "NVIDIA H200 · sm_90" in text
    browser.key("Escape", key_code=27)
    # The platform filter: unticking the H200 leaves the CPU's columns.
    browser.click('#axis-filters details[data-axis="platform"] summary')
    browser.click('#axis-filters input[data-axis="platform"][value="NVIDIA H200 · sm_90"]')
    assert browser.count("#grid thead th.col", visible=True) == 6
    assert browser.eval('[...document.querySelectorAll("#grid thead th.platform")].filter(th => !th.hidden).map(th => th.textContent)') == [
        "x86_64 CPU · AMX"]
    browser.click('.tabs [data-view="changes"]')
    rows = browser.eval('[...document.querySelectorAll("table.platforms tbody tr")].map(tr => tr.textContent)')
    assert len(rows) == 2 and "moe · none" in rows[0] and "x86_64 CPU · AMX" in rows[0] and "pass" in rows[0]
    assert "NVIDIA H200 · sm_90" in rows[1] and "fail" in rows[1] and "0.3" in rows[0]
