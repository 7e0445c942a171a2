from compress.stages.config import TrainConfig
from compress.stages.registry import spec_of


def test_init_from_is_in_the_cache_id_by_content(tmp_path):
    checkpoint = tmp_path / "llama"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"hidden_size": 32}')
    (checkpoint / "model.safetensors").write_bytes(b"weights v1")
    config = TrainConfig(init_from=checkpoint)
    content_id = spec_of(config).content_id
    first = content_id(config)
    (checkpoint / ".cache").mkdir()  # hidden files (e.g. a hub download's lock) are not the checkpoint
    (checkpoint / ".cache" / "lock").write_text("x")
    assert content_id(config) == first
    (checkpoint / "model.safetensors").write_bytes(b"weights v2")  # same path, new weights
    assert content_id(config) != first
    assert content_id(TrainConfig()) is None  # no checkpoint: the id is the config alone
