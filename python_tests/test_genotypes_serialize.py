"""Genotype types, library, safe parser and JSON round trips."""
import json
import re

import pytest

import hdas_ext.genotypes as G

# The published strings, with their original spacing quirks (P-DARTS has "('sep_conv_3x3',0)").
PDARTS_TEXT = ("Genotype(normal=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0),"
               "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3',0), "
               "('dil_conv_5x5', 4)], normal_concat=range(2, 6), reduce=[('avg_pool_3x3', 0), "
               "('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('dil_conv_5x5', 2), ('max_pool_3x3', 0), "
               "('dil_conv_3x3', 1), ('dil_conv_3x3', 1), ('dil_conv_5x5', 3)], reduce_concat=range(2, 6))")

HS_CIFAR_TEXT = """Genotype2(DAG1=[[('skip_connect', 0), ('skip_connect', 1)], [('skip_connect', 0), ('skip_connect', 1)],
 [('skip_connect', 1), ('max_pool_3x3', 2)], [('max_pool_3x3', 2), ('skip_connect', 4)],
 [('max_pool_3x3', 3), ('skip_connect', 5)], [('max_pool_3x3', 4), ('skip_connect', 6)]], DAG1_concat=range(6, 8),
 DAG2=[[('max_pool_3x3', 0), ('max_pool_3x3', 1)], [('skip_connect', 0), ('skip_connect', 1)],
 [('skip_connect', 1), ('skip_connect', 2)], [('max_pool_3x3', 2), ('skip_connect', 3)],
 [('max_pool_3x3', 3), ('skip_connect', 5)], [('avg_pool_3x3', 4), ('skip_connect', 6)]], DAG2_concat=range(6, 8),
 DAG3=[[('skip_connect', 0), ('skip_connect', 1)], [('skip_connect', 1), ('skip_connect', 2)],
 [('skip_connect', 2), ('skip_connect', 3)], [('max_pool_3x3', 2), ('skip_connect', 3)],
 [('max_pool_3x3', 3), ('skip_connect', 5)], [('max_pool_3x3', 4), ('max_pool_3x3', 5)]], DAG3_concat=range(6, 8))"""

# Hc-DAS cells in the H-DAS nested format, reduce2 only differs from a flat entry by nesting.
HC_NESTED_TEXT = (
    "Genotype3(normal1=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], "
    "[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 2), ('sep_conv_3x3', 3)]], normal1_concat=range(2, 6), "
    "reduce1=[[('max_pool_3x3', 0), ('skip_connect', 1)], [('max_pool_3x3', 0), ('max_pool_3x3', 2)], "
    "[('sep_conv_3x3', 0), ('skip_connect', 1)], [('sep_conv_3x3', 0), ('dil_conv_3x3', 4)]], reduce1_concat=range(2, 6), "
    "normal2=[[('skip_connect', 0), ('dil_conv_3x3', 1)], [('skip_connect', 0), ('sep_conv_3x3', 1)], "
    "[('skip_connect', 0), ('sep_conv_3x3', 1)], [('skip_connect', 0), ('sep_conv_3x3', 1)]], normal2_concat=range(2, 6), "
    "reduce2=[[('max_pool_3x3', 0), ('dil_conv_3x3', 1)], [('max_pool_3x3', 0), ('dil_conv_5x5', 2)], "
    "[('max_pool_3x3', 0), ('dil_conv_5x5', 3)], [('max_pool_3x3', 0), ('skip_connect', 4)]], reduce2_concat=range(2, 6), "
    "normal3=[[('dil_conv_5x5', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 1), ('dil_conv_3x3', 2)], "
    "[('dil_conv_3x3', 0), ('sep_conv_5x5', 2)], [('sep_conv_5x5', 3), ('sep_conv_3x3', 4)]], normal3_concat=range(2, 6))")


@pytest.mark.parametrize("name", G.names())
def test_round_trips(name):
    g = G.get(name)
    assert G.parse(repr(g)) == g
    assert G.from_json(G.to_json(g)) == g
    assert G.parse(G.to_json(g, indent=2)) == g
    assert type(G.parse(repr(g))) is type(g)
    # the parsed object is made of plain tuples/lists/ints, like the published values
    assert repr(G.parse(repr(g))) == repr(g)


def test_published_strings():
    assert G.parse(PDARTS_TEXT) == G.PDARTS
    assert G.parse(HS_CIFAR_TEXT) == G.HS_DAS_CIFAR
    assert G.parse(HC_NESTED_TEXT) == G.HC_DAS
    assert G.parse("PDARTS = " + PDARTS_TEXT) == G.PDARTS
    assert G.PDARTS.normal_concat == [2, 3, 4, 5]


def test_flat_stage_dag_is_grouped():
    flat = repr(G.HS_DAS_IMAGENET).replace("[[", "[").replace("]]", "]").replace("), ], [(", "), (")
    flat = flat.replace("], [", ", ")  # DAGx as one flat list of pairs
    assert G.parse(flat) == G.HS_DAS_IMAGENET


def test_get_aliases_and_copies():
    assert G.get("P-DARTS") == G.PDARTS
    assert G.get("darts") == G.DARTS_V2 == G.DARTS
    assert G.get("hs-das-cifar") == G.HS_DAS_CIFAR
    g = G.get("DARTS_V1")
    g.normal.append(("skip_connect", 0))
    assert len(G.DARTS_V1.normal) == 8
    with pytest.raises(KeyError, match="unknown genotype name"):
        G.get("NASNet")


def test_library_facts():
    assert isinstance(G.HC_DAS, G.StageCellsGenotype) and isinstance(G.HS_DAS_CIFAR, G.StageGenotype)
    assert [len(d) for d, _ in G.stages(G.HS_DAS_CIFAR)] == [6, 6, 6]
    assert [c for _, c in G.stages(G.HS_DAS_IMAGENET)] == [[4, 5]] * 3
    assert G.cell_nodes(G.DARTS_V2.normal)[3] == [("skip_connect", 0), ("dil_conv_3x3", 2)]
    assert [n for n, _, _ in G.cells(G.HC_DAS)] == ["normal1", "reduce1", "normal2", "reduce2", "normal3"]


@pytest.mark.parametrize("text, where", [
    ("Genotype(normal=[('sep_conv_3x3', 1)", "line 1"),                        # unterminated
    ("StageGenotype(DAG1=[[('skip_connect', 0), ('skip_connect', 1)]],\n DAG1_concat=__import__('os'), "
     "DAG2=[], DAG2_concat=[], DAG3=[], DAG3_concat=[])", "line 2, column 14"),  # a call that is not allowed
    ("Genotype(normal=[('sep_conv_3x3', 1.5)], normal_concat=[2], reduce=[], reduce_concat=[2])", "column 35"),
    ("Genotype(normal=[], normal_concat=[2], reduce=[], reduce_concat=[2], extra=1)", "no field 'extra'"),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=[2])", "missing field"),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('conv_9x9', 1)], normal_concat=[2], reduce=[('skip_connect', 0), "
     "('skip_connect', 1)], reduce_concat=[2])", "unknown op 'conv_9x9'"),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 2)], normal_concat=[2], reduce=[('skip_connect', 0), "
     "('skip_connect', 1)], reduce_concat=[2])", r"input state 2 must be an int in \[0, 2\)"),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=range(2, 6), reduce=[('skip_connect', 0), "
     "('skip_connect', 1)], reduce_concat=[2])", r"concat state 3"),
    ("[1, 2]", "expected a call"),
    ("Genotype(*x)", "column"),
    ("", "empty"),
    ('{"type": "Genotype", "normal": [}', "line 1, column 33"),
    ('{"type": "Genotype9"}', "field 'type'"),
    ('{"type": "StageGenotype", "DAG1": []}', "missing"),
])
def test_malformed_inputs_say_where(text, where):
    with pytest.raises(ValueError, match=where):
        G.parse(text)


def test_nested_cells_need_two_pairs_per_node():
    # A flat gene is read two pairs at a time, so a nested node of another size would be regrouped
    # into a different cell without a word.
    a, b, c = ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 2)
    text = f"Genotype(normal=[[{a}, {b}, {a}], [{a}, {b}, {c}]], normal_concat=[2, 3], reduce=[[{a}, {b}]], reduce_concat=[2])"
    with pytest.raises(ValueError, match=re.escape("normal[0]: a cell node takes 2 (op, input) pairs, got 3")):
        G.parse(text)
    with pytest.raises(ValueError, match=re.escape("cell[1]: a cell node takes 2 (op, input) pairs, got 1")):
        G.flatten_nodes([[a, b], [a]])


def test_huge_range_is_refused_before_it_is_expanded():
    text = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=[2], "
            "reduce=[('skip_connect', 0), ('skip_connect', 1)], reduce_concat=range(2, 10**12))")
    with pytest.raises(ValueError, match="not allowed|unexpected"):  # 10**12 is an expression
        G.parse(text)
    with pytest.raises(ValueError, match="range\\(\\) spans 999999999998 states"):
        G.parse(text.replace("10**12", "1000000000000"))


def test_line_numbers_are_the_texts_own():
    text = "\n\n" + repr(G.DARTS_V2).replace("'sep_conv_3x3'", "'conv_9x9'", 1)
    with pytest.raises(ValueError, match="^line 3, "):
        G.parse(text)
    assert G.parse("\n  " + G.to_json(G.DARTS_V2)) == G.DARTS_V2


def test_resolve_names_strings_files_and_objects(tmp_path):
    assert G.resolve("P-DARTS") == G.PDARTS
    assert G.resolve(f"MINE = {G.HC_DAS!r}") == G.HC_DAS
    assert G.resolve(G.to_json(G.HS_DAS_CIFAR), types=(G.StageGenotype,)) == G.HS_DAS_CIFAR
    with pytest.raises(TypeError, match="cell must be a StageGenotype"):
        G.resolve("DARTS_V2", "cell", (G.StageGenotype,))
    with pytest.raises(ValueError, match="cell: unknown genotype name 'NASNET'"):
        G.resolve("NASNET", "cell")
    # a file as a search writes it (genotype_best.json), or holding a repr line
    path = tmp_path / "genotype_best.json"
    path.write_text(G.to_json(G.HS_DAS_IMAGENET))
    assert G.resolve(str(path), "stages", (G.StageGenotype,)) == G.HS_DAS_IMAGENET
    path.write_text(f"MINE = {G.PDARTS!r}\n")
    assert G.resolve(str(path)) == G.PDARTS


def test_no_eval_side_effects(tmp_path):
    marker = tmp_path / "pwned"
    text = f"Genotype(normal=open({str(marker)!r}, 'w'), normal_concat=[2], reduce=[], reduce_concat=[2])"
    with pytest.raises(ValueError, match="not allowed"):
        G.parse(text)
    assert not marker.exists()


def test_json_shape():
    doc = json.loads(G.to_json(G.HS_DAS_IMAGENET))
    assert doc["type"] == "StageGenotype"
    assert doc["DAG1"][0] == [["max_pool_3x3", 0], ["max_pool_3x3", 1]]
    assert doc["DAG3_concat"] == [4, 5]
    with pytest.raises(TypeError):
        G.to_json((1, 2))


def test_content_errors_point_at_the_field():
    text = ("StageGenotype(DAG1=[[('skip_connect', 0), ('skip_connect', 1)]], DAG1_concat=[2],\n"
            "  DAG2=[[('skip_connect', 0), ('skip_connect', 2)]], DAG2_concat=[2],\n"
            "  DAG3=[[('skip_connect', 0), ('skip_connect', 1)]], DAG3_concat=[5])")
    with pytest.raises(ValueError, match=r"^line 2, column 8: DAG2\[0\]: input state 2"):
        G.parse(text)
    with pytest.raises(ValueError, match=r"^line 3, column 66: DAG3_concat: concat state 5"):
        G.parse(text.replace("('skip_connect', 2)", "('skip_connect', 1)"))


def test_released_code_names_are_aliases():
    # Published strings and scripts use the released code's names Genotype2 / Genotype3.
    assert G.Genotype2 is G.StageGenotype and G.Genotype3 is G.StageCellsGenotype
    assert G.parse(repr(G.HS_DAS_CIFAR).replace("StageGenotype(", "Genotype2(")) == G.HS_DAS_CIFAR
    assert G.parse(repr(G.HC_DAS).replace("StageCellsGenotype(", "Genotype3(")) == G.HC_DAS
    doc = G.to_json(G.HS_DAS_IMAGENET).replace('"StageGenotype"', '"Genotype2"')
    assert G.from_json(doc) == G.HS_DAS_IMAGENET
