def test_tiny_model_encodes(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_dir, device="cpu")
    emb = model.encode(["hello world", "another sentence"])
    assert emb.shape == (2, 32)
