"""What ``parse_model`` says of a node list: unknown inputs named with the nodes there are, and
a node that could not be read told once, by its own problem, not by clashes it causes."""

from __future__ import annotations

from typing import Any

import pytest

import nnplug
from nnplug.config import parse_model

REGISTRY = nnplug.load_registry()
DENSE = {"type": "dense", "units": 3}


def problems(*layers: dict[str, Any]) -> list[str]:
    with pytest.raises(nnplug.ConfigError) as info:
        parse_model({"input": [4], "layers": [*layers, DENSE], "loss": {"type": "mse"}}, REGISTRY)
    return info.value.problems


def test_an_unknown_input_lists_the_node_names_sorted() -> None:
    assert problems({"type": "relu", "name": "b"}, {"type": "relu", "name": "a", "inputs": ["zz"]}) == [
        "layers[1] 'a' (relu) -> inputs: unknown node 'zz'; nodes: b, dense_2, input"]


def test_an_unknown_input_is_never_told_the_node_that_reads_it() -> None:
    [line] = problems({"type": "relu", "name": "zz"}, {"type": "relu", "name": "abx1", "inputs": ["abx"]})
    assert line == "layers[1] 'abx1' (relu) -> inputs: unknown node 'abx'; nodes: dense_2, input, zz"


def test_the_first_twenty_unknown_inputs_are_detailed_and_the_rest_named_only() -> None:
    found = problems({"type": "relu", "name": "a"}, *[{"type": "relu", "inputs": ["aa"]}] * 21)
    assert len(found) == 21
    assert all("(did you mean 'a'?); nodes: a, " in line for line in found[:20])
    assert found[20] == "layers[21] 'relu_21' (relu) -> inputs: unknown node 'aa'"


def test_a_broken_node_whose_default_name_is_taken_is_told_only_its_own_problem() -> None:
    # its stand-in name relu_1 is not one the file gave: a clash would send the user chasing it
    assert problems({"type": "relu", "name": "relu_1"}, {"type": "relu", "bogus": 1}) == [
        "layers[1] (relu) -> bogus: unknown field; the fields are type, name, inputs (got 1)"]


def test_two_nodes_with_an_empty_name_are_each_told_the_name_pattern_and_no_clash() -> None:
    found = problems({"type": "relu", "name": ""}, {"type": "relu", "name": ""})
    assert [line.split(" -> ")[0] for line in found] == ["layers[0] (relu)", "layers[1] (relu)"]
    assert all("should match pattern" in line and "already used" not in line for line in found)


def test_an_empty_inputs_list_on_a_two_input_node_is_told_once() -> None:
    assert problems({"type": "relu"}, {"type": "add", "inputs": []}) == [
        "layers[1] (add) -> inputs: expected at least one node name; leave inputs out to read the node "
        "before (got [])"]


def test_a_duplicate_node_with_an_unknown_input_is_told_the_name_of_the_node_it_duplicates() -> None:
    # the name is the first node's, a valid input: only a node's own name is left out of the list
    found = problems({"type": "relu", "name": "abc"}, {"type": "relu", "name": "abc", "inputs": ["abd"]})
    assert found[-1] == ("layers[1] 'abc' (relu) -> inputs: unknown node 'abd' (did you mean 'abc'?); "
                         "nodes: abc, dense_2, input")


def test_problems_come_in_file_order_of_their_nodes_whichever_check_found_them() -> None:
    # a node's unknown input is found after every node's fields are read: it still comes first
    found = problems({"type": "relu", "inputs": ["nope"]}, {"type": "relu", "bogus": 1})
    assert [line.split(" ")[0] for line in found] == ["layers[0]", "layers[1]"]


def test_an_unknown_input_is_told_the_nearest_name_not_a_further_one() -> None:
    [line] = problems({"type": "relu", "name": "abxd"}, {"type": "relu", "name": "abcde"},
                      {"type": "relu", "name": "q", "inputs": ["abcd"]})
    assert "unknown node 'abcd' (did you mean 'abcde'?)" in line


def test_an_unknown_input_lists_twenty_node_names_then_how_many_there_are() -> None:
    # 21 choices: the 19 relus, dense_20 and the model input (the node itself is left out)
    [line] = problems(*[{"type": "relu"}] * 19, {"type": "relu", "name": "q", "inputs": ["zz"]})
    listed = line.split("; nodes: ")[1]
    assert listed.endswith(", ... (21 in all)")
    assert len(listed.removesuffix(", ... (21 in all)").split(", ")) == 20
