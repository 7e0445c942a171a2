"""Full-ranking HR/NDCG/MRR@K and ONNX-vs-torch ranking parity."""
