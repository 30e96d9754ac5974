"""Genotype pictures: graph sources, PNG rendering, the dot-less fallback and `hdas plot`."""
import struct
import sys

import pytest

graphviz = pytest.importorskip("graphviz")  # the 'viz' extra

import hdas_ext.genotypes as G
from hdas_ext import viz
from hdas_ext.cli import main

needs_dot = pytest.mark.skipif(not viz.dot_available(),
                               reason="graphviz 'dot' binary not installed (apt-get install graphviz)")


def test_cell_source_colours_and_edges():
    src = viz.cell_graph(G.DARTS_V2.normal, G.DARTS_V2.normal_concat, caption="DARTS_V2 normal").source
    for colour in viz.CELL_COLOURS.values():
        assert colour in src
    assert src.count("->") == 8 + 4                      # 8 op edges + 4 concat edges to c_{k}
    assert src.count("label=sep_conv_3x3") == 5 and "label=dil_conv_3x3" in src


def test_stage_source_marks_dead_cells_and_output():
    dag = [[("skip_connect", 0), ("skip_connect", 1)]] * 4           # cells 0, 1 are dead
    src = viz.stage_graph(dag, [4, 5]).source
    for colour in viz.STAGE_COLOURS.values():
        assert colour in src
    assert src.count("filled,dashed") == 2
    assert src.count("-> \"c_{k}\"") == 2                            # only concat states feed the output
    full = viz.genotype_graph(G.HS_DAS_CIFAR).source
    assert full.count("cluster_DAG") == 3 and full.count("->") == 3 * (12 + 2)


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@needs_dot
def test_render_png(tmp_path):
    path = viz.render(viz.genotype_graph(G.HS_DAS_CIFAR, caption="HS_DAS_CIFAR"), str(tmp_path / "hs.png"))
    data = open(path, "rb").read()
    width, height = png_size(data)
    assert 20_000 < len(data) < 5_000_000
    assert 500 < width < 5000 and 300 < height < 5000


@needs_dot
def test_cli_plot(tmp_path, capsys):
    out = tmp_path / "cell.svg"
    assert main(["plot", "DARTS_V1", "--part", "reduce", "--output", str(out)]) == 0
    assert out.read_text().lstrip().startswith(("<?xml", "<svg"))
    geno_file = tmp_path / "mine.json"
    geno_file.write_text(G.to_json(G.HS_DAS_IMAGENET))
    assert main(["plot", str(geno_file), "--format", "pdf", "--output", str(tmp_path / "mine.pdf")]) == 0
    assert (tmp_path / "mine.pdf").read_bytes()[:5] == b"%PDF-"
    # genotype text as the search logs it, NAME = Genotype(...)
    out = tmp_path / "named.svg"
    assert main(["plot", f"MINE = {G.DARTS_V2!r}", "--output", str(out)]) == 0
    assert out.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_cli_plot_errors():
    with pytest.raises(SystemExit, match="unknown genotype name 'NASNET'"):
        main(["plot", "NASNET"])
    with pytest.raises(SystemExit, match="--part must be one of"):
        main(["plot", "HC_DAS", "--part", "normal"])
    with pytest.raises(SystemExit, match="extension must be one of"):
        main(["plot", "DARTS", "--output", "x.jpg"])


def test_fallback_without_dot(tmp_path, monkeypatch, capsys):
    def no_dot(*args, **kwargs):
        raise graphviz.ExecutableNotFound(("dot",))
    monkeypatch.setattr(graphviz.Digraph, "pipe", no_dot)
    with pytest.raises(RuntimeError, match=r"dot -Tpng .*x\.dot -o .*x\.png"):
        viz.render(viz.stage_graph(*G.stages(G.HS_DAS_IMAGENET)[0]), str(tmp_path / "x.png"))
    assert (tmp_path / "x.dot").read_text().startswith("digraph")
    assert main(["plot", "PDARTS", "--output", str(tmp_path / "p.png")]) == 0  # the documented fallback
    printed = capsys.readouterr()
    assert printed.out.strip() == str(tmp_path / "p.dot") and "hdas plot: note: " in printed.err
    assert "wrote the source to" in printed.err
    assert (tmp_path / "p.dot").exists() and not (tmp_path / "p.png").exists()


def test_without_the_graphviz_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # import graphviz now fails
    needs = r"graphviz is not installed \(the 'viz' extra\): pip install graphviz"
    with pytest.raises(ImportError, match=needs):
        viz.cell_graph(G.DARTS_V2.normal, G.DARTS_V2.normal_concat)
    with pytest.raises(ImportError, match=needs):
        viz.dot_available()
