"""sentiment-minilm behind LitServe with its dynamic batching, for bench_serve.py's P3.

The same merged model and the same `SentimentModel.predict` call as `python -m maaslab serve`;
a JSON route: POST /predict {"text": "..."} -> {"probabilities": [neg, pos], "label": "..."}.
Run: python bench/litserve_sentiment.py --port 8100 [--max-batch-size 32] [--batch-timeout 0.005]
[--workers 1]
"""

from __future__ import annotations

import argparse

import litserve as ls


class SentimentAPI(ls.LitAPI):
    """One review in, its class probabilities and label out; LitServe groups reviews in batches."""

    def setup(self, device: str) -> None:
        """Load the shipped model once per worker."""
        from maaslab.auto import load

        self.model = load("sentiment-minilm", device="cpu")

    def decode_request(self, request: dict) -> str:
        """The review text of one request."""
        return str(request["text"])

    def predict(self, texts: list[str]) -> list[dict]:
        """One forward pass for the whole batch, as the maaslab server runs it."""
        pred = self.model.predict(list(texts))
        return [
            {"probabilities": p.tolist(), "label": label}
            for p, label in zip(pred.probabilities, pred.labels, strict=True)
        ]

    def batch(self, inputs: list[str]) -> list[str]:
        """Texts stay a list (LitServe would try to stack tensors)."""
        return list(inputs)

    def unbatch(self, output: list[dict]) -> list[dict]:
        """One answer per request, in order."""
        return output

    def encode_response(self, output: dict) -> dict:
        """The JSON body sent back."""
        return output


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.005, help="seconds")
    parser.add_argument("--workers", type=int, default=1, help="inference workers (processes)")
    args = parser.parse_args()
    api = SentimentAPI(max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    server = ls.LitServer(
        api, accelerator="cpu", devices=1, workers_per_device=args.workers, timeout=60
    )
    server.run(
        host="127.0.0.1",
        port=args.port,
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
    )


if __name__ == "__main__":
    main()
