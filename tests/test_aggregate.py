"""build_matrix makes its cells without validating them again (farm.report.aggregate._trusted): they must be valid."""

from farm.model.matrix import MatrixCell, ProbeSummary
from farm.model.results import RunManifest
from farm.report.aggregate import build_matrix, load_matrix
from farm.store import LocalStore, manifest_key, read_manifest, read_results
from tests.synthetic import Shape, write_runs


def test_matrix_cells_are_what_validation_would_make(tmp_path):
    store = LocalStore(tmp_path / "store")
    (run_id,) = write_runs(store, Shape(rows=6, columns=12, nights=1), hostile=True)
    matrix = build_matrix(read_manifest(store, run_id), read_results(store, run_id))
    assert len(matrix.cells) == 72
    assert any(cell.probe_results for cell in matrix.cells)
    for cell in matrix.cells:
        assert set(cell.__dict__) == set(MatrixCell.model_fields), "every field given, none unknown"
        assert MatrixCell.model_validate(cell.model_dump()) == cell
        for probe in cell.probe_results:
            assert set(probe.__dict__) == set(ProbeSummary.model_fields)
    # And what the store holds reads back as the same matrix.
    assert load_matrix(store, run_id).cells == matrix.cells


def test_manifest_carries_its_cells_ids(tmp_path):
    store = LocalStore(tmp_path / "store")
    (run_id,) = write_runs(store, Shape(rows=2, columns=3, nights=1), aggregate_runs=False)
    stored = RunManifest.model_validate_json(store.get(manifest_key(run_id)))
    assert stored.cell_ids == [cell.id for cell in stored.cells]
    assert len(set(stored.cell_ids)) == 6
    # A manifest written before cell_ids existed gets them computed; a stored id is the one the run used.
    old = stored.model_dump(mode="json", exclude={"cell_ids"})
    assert RunManifest.model_validate(old).cell_ids == stored.cell_ids
    # The ids the run filed its results under are kept, even if hashing changed since.
    renamed = {**old, "cell_ids": [f"id{i}" for i in range(6)]}
    assert RunManifest.model_validate(renamed).cell_ids == renamed["cell_ids"]
