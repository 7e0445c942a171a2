from compress.stages import content_id
from compress.stages.train import Config


def test_init_from_is_in_the_cache_id_by_content(tmp_path):
    checkpoint = tmp_path / "llama"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"hidden_size": 32}')
    (checkpoint / "model.safetensors").write_bytes(b"weights v1")
    config = Config(init_from=checkpoint)
    first = content_id(config)
    (checkpoint / ".cache").mkdir()  # hidden files (e.g. a hub download's lock) are not the checkpoint
    (checkpoint / ".cache" / "lock").write_text("x")
    assert content_id(config) == first
    (checkpoint / "model.safetensors").write_bytes(b"weights v2")  # same path, new weights
    assert content_id(config) != first
    assert content_id(Config()) is None  # no checkpoint: the id is the config alone
