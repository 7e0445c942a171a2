"""The one training loop and the losses shared by train, distill and prune recovery."""
