"""What a Jazzy `ros2 bag record` MCAP bag has, checked with readers this package did not write:
MCAP's own reader and its ROS 2 decoder (mcap, mcap-ros2-support) and a plain YAML parser."""

from __future__ import annotations

from pathlib import Path

import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory


def check_like_ros2_bag_record(path: Path) -> dict[str, list[dict]]:
    """Asserts the bag in `path` reads as a Jazzy recorder's bag does; returns each topic's
    offered QoS profiles."""
    info = yaml.safe_load((Path(path) / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 9 and info["ros_distro"] == "jazzy" and info["storage_identifier"] == "mcap"
    file = Path(path) / info["relative_file_paths"][0]
    assert file.is_file() and [f["path"] for f in info["files"]] == [file.name]
    topics = {t["topic_metadata"]["name"]: t for t in info["topics_with_message_count"]}
    for name, topic in topics.items():
        meta = topic["topic_metadata"]
        assert name.startswith("/"), f"{name}: topic names in a bag are fully qualified"
        assert meta["type_description_hash"].startswith("RIHS01_") and isinstance(meta["offered_qos_profiles"], list)
    counts: dict[str, int] = {}
    with file.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        summary = reader.get_summary()
        for channel in summary.channels.values():
            meta = topics[channel.topic]["topic_metadata"]
            assert set(channel.metadata) == {"offered_qos_profiles", "topic_type_hash"}, channel.metadata
            assert channel.metadata["topic_type_hash"] == meta["type_description_hash"]
            assert (yaml.safe_load(channel.metadata["offered_qos_profiles"]) or []) == meta["offered_qos_profiles"]
            assert summary.schemas[channel.schema_id].encoding == "ros2msg"
        embedded = [m for m in reader.iter_metadata() if m.name == "rosbag2"]
        assert len(embedded) == 1
        inner = yaml.safe_load(embedded[0].metadata["serialized_metadata"])
        assert inner["relative_file_paths"] == [file.name] and inner["ros_distro"] == "jazzy"
        assert {t["topic_metadata"]["name"]: t["message_count"] for t in inner["topics_with_message_count"]} == {
            name: t["message_count"] for name, t in topics.items()
        }
        for _, channel, _, decoded in reader.iter_decoded_messages():
            assert decoded is not None
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
    assert counts == {name: t["message_count"] for name, t in topics.items() if t["message_count"]}
    assert sum(counts.values()) == info["message_count"]
    return {name: t["topic_metadata"]["offered_qos_profiles"] for name, t in topics.items()}
