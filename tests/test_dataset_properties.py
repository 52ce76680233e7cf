"""Property: any valid dataset, extras included, round-trips through JSON unchanged."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embtune_core.data.dataset import QADataset
from embtune_core.data.textfiles import is_blank

ids = st.text(min_size=1, max_size=12)
# A valid text is one the validator accepts: not blank by its own definition (whitespace and invisible
# format characters such as a lone soft hyphen '\xad', which str.strip keeps).
texts = st.text(min_size=1, max_size=40).filter(lambda t: not is_blank(t))


@st.composite
def datasets(draw):
    corpus = draw(st.dictionaries(ids, texts, min_size=1, max_size=6))
    queries = draw(st.dictionaries(ids, texts, min_size=1, max_size=6))
    corpus_ids = sorted(corpus)
    relevant = {q: draw(st.lists(st.sampled_from(corpus_ids), min_size=1, max_size=3, unique=True)) for q in queries}
    extras = {}
    if draw(st.booleans()):
        extras["negatives"] = {q: draw(st.lists(st.sampled_from(corpus_ids), max_size=2)) for q in queries}
    if draw(st.booleans()):
        extras["corpus_metadata"] = {c: {"source": draw(texts), "page": draw(st.integers(0, 500))} for c in corpus}
    if draw(st.booleans()):
        extras["x_custom"] = draw(st.recursive(st.none() | st.booleans() | st.integers() | texts,
                                               lambda inner: st.lists(inner, max_size=3), max_leaves=5))
    mode = draw(st.sampled_from([None, "text"]))
    return QADataset(queries, corpus, relevant, mode, extras)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ds=datasets(), indent=st.sampled_from([None, 2, 4]))
def test_round_trip(tmp_path, ds, indent):
    path = tmp_path / "d.json"
    ds.save(path, indent=indent)
    loaded = QADataset.load(path)
    assert loaded == ds
    assert json.loads(path.read_text()) == ds.to_json()
    loaded.save(tmp_path / "again.json", indent=indent)
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()
