"""Properties of the W&B-name -> POSIX-name mapping."""

from hypothesis import given, settings
from hypothesis import strategies as st

from wfs.client.models import RunFile
from wfs.namespace.paths import NAME_MAX_BYTES, is_probe_name, name_components, safe_component, split_path
from wfs.namespace.runtree import DirEntry, FileEntry, RunTree

names = st.text(min_size=0, max_size=300)
wandb_paths = st.lists(st.sampled_from(["", ".", "..", "a", "b", "é", " x ", "[*]", "\x01", "a" * 300]), max_size=5).map("/".join) | names


def _f(name, size=1):
    return RunFile("e", "p", "r", name, size)


def _valid(component: str) -> bool:
    raw = component.encode("utf-8", "surrogateescape")
    return component not in ("", ".", "..") and "/" not in component and "\x00" not in component and len(raw) <= NAME_MAX_BYTES


@given(wandb_paths)
def test_components_are_always_valid_posix_names(name):
    assert all(_valid(c) for c in name_components(name))


@given(st.text(min_size=1, max_size=400).filter(lambda s: s not in (".", "..") and "/" not in s))
def test_plain_components_round_trip_when_short(component):
    mapped = safe_component(component)
    assert _valid(mapped)
    if len(component.encode("utf-8", "surrogatepass")) <= NAME_MAX_BYTES and "\x00" not in component:
        try:
            component.encode("utf-8")
        except UnicodeEncodeError:
            return
        assert mapped == component


@settings(max_examples=200)
@given(st.lists(wandb_paths, max_size=12, unique=True))
def test_tree_paths_unique_and_every_file_placed(file_names):
    tree = RunTree([_f(n) for n in file_names])
    seen = []

    def walk(node, prefix):
        for name, child in node.children.items():
            assert _valid(name)
            if isinstance(child, DirEntry):
                walk(child, prefix + (name,))
            else:
                seen.append(child.file.name)
                assert tree.lookup(prefix + (name,)) is child

    walk(tree.root, ())
    placeable = [n for n in file_names if name_components(n)]
    assert sorted(seen) == sorted(placeable)
    assert tree.file_count == len(placeable)


def test_dotdot_and_leading_slash_stay_inside_the_run():
    tree = RunTree([_f("../../etc/passwd"), _f("/abs/x"), _f("a//b/./c")])
    assert isinstance(tree.lookup(("%2E%2E", "%2E%2E", "etc", "passwd")), FileEntry)
    assert isinstance(tree.lookup(("abs", "x")), FileEntry)
    assert isinstance(tree.lookup(("a", "b", "c")), FileEntry)


def test_file_and_folder_with_the_same_name():
    tree = RunTree([_f("a", 1), _f("a/b", 2)])
    assert isinstance(tree.lookup(("a",)), DirEntry)
    assert tree.lookup(("a~file",)).file.name == "a"
    assert tree.lookup(("a", "b")).file.name == "a/b"


def test_colliding_names_get_numbered_deterministically():
    first = RunTree([_f("x.txt"), _f("./x.txt"), _f("/x.txt")])
    second = RunTree([_f("/x.txt"), _f("x.txt"), _f("./x.txt")])
    for tree in (first, second):
        assert sorted(tree.root.children) == ["x.txt", "x~2.txt", "x~3.txt"]
    assert first.lookup(("x~2.txt",)).file.name == second.lookup(("x~2.txt",)).file.name


def test_long_names_are_shortened_but_distinct():
    a, b = "a" * 300 + "1", "a" * 300 + "2"
    ca, cb = safe_component(a), safe_component(b)
    assert ca != cb and len(ca.encode()) <= 255 and len(cb.encode()) <= 255


def test_probe_names():
    for probe in (".git", ".DS_Store", "._foo", ".Trash-1000", "autorun.inf", "__pycache__", ".hidden"):
        assert is_probe_name(probe)
    for real in ("config.yaml", "media", "output.log", ".wandb-ish"):
        assert not is_probe_name(real)


def test_split_path():
    assert split_path("/") == ()
    assert split_path("/e/p//r/") == ("e", "p", "r")
