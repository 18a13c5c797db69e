import pytest

from broker.topics import FleetTopics, TopicMatch, parse_topic


def test_topics_round_trip():
    t = FleetTopics("ward-3")
    assert t.update(12, "dev-101") == "pw/ward-3/update/12/dev-101"
    assert parse_topic(t.update(12, "dev-101")) == TopicMatch("update", "ward-3", 12, "dev-101")
    assert parse_topic(t.global_model(4)) == TopicMatch("global", "ward-3", round=4)
    assert parse_topic(t.status("dev-7")) == TopicMatch("status", "ward-3", device="dev-7")
    assert parse_topic(t.alert("dev-7")) == TopicMatch("alert", "ward-3", device="dev-7")


@pytest.mark.parametrize("topic", ["pw/f/update/x/dev", "pw/f/update/1", "other/f/global/1", "pw/f/global/1/extra",
                                   "pw/f/device/d/state", "pw/f+/alert/d", ""])
def test_foreign_topics_are_refused(topic):
    with pytest.raises(ValueError, match="not in the pulsewire tree"):
        parse_topic(topic)


@pytest.mark.parametrize("name", ["a/b", "#", "+", "", "x" * 65])
def test_names_that_would_break_the_tree_are_refused(name):
    with pytest.raises(ValueError, match="MQTT wildcards"):
        FleetTopics("f").update(1, name)
