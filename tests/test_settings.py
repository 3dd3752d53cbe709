"""The parameter table and the typed groups the steps receive: each group's object holds
exactly the table's parameters of that group, with the table's types, so a parameter added
to a group in the table reaches its steps or fails here."""

import dataclasses
import typing

import pytest

from shapes_pipeline.helpers import settings


@pytest.mark.parametrize("cls", settings.GROUP_SETTINGS, ids=lambda c: c.__name__)
def test_each_group_object_is_its_groups_parameters(cls):
    table = [p for p in settings.PARAMETERS if p.group == cls.GROUP]
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    assert [f.name for f in fields] == [p.name for p in table]
    assert [hints[f.name] for f in fields] == [p.kind for p in table]
    made = cls.of(settings.defaults())
    assert dataclasses.asdict(made) == {p.name: p.default for p in table}


def test_every_group_is_a_known_one_and_names_are_unique():
    assert {p.group for p in settings.PARAMETERS} == set(settings.GROUPS)
    assert len(settings.BY_NAME) == len(settings.PARAMETERS)
    assert {c.GROUP for c in settings.GROUP_SETTINGS} <= set(settings.GROUPS)


def test_defaults_are_in_their_range_and_choices():
    for p in settings.PARAMETERS:
        if p.default is None:
            continue
        assert isinstance(p.default, p.kind), p.name
        if p.range:
            assert p.range[0] <= p.default <= p.range[1], p.name
        if p.choices:
            assert p.default in p.choices, p.name


def test_augmentation_transforms_are_the_groups_values():
    values = {**settings.defaults(), "augment_rotation": 33.0, "augment_flip_vertical": True}
    transforms = settings.AugmentSettings.of(values).transforms()
    assert transforms["rotation"] == 33.0 and transforms["flip_vertical"] is True
    assert transforms["zoom"] == values["augment_zoom"]
