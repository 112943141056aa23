"""Concurrency: 8 threads × 5 generations on one shared `LocalBackend` (the app's path).

Every session of the app shares one backend; this checks that many at once get exactly the
images one session alone would get, and that serving them together costs no throughput.
Reference: the same 40 requests one after another in one thread; sequential and concurrent
rounds alternate (S C C S …) and the totals are compared. Targets: 40/40 identical,
throughput concurrent / sequential ≥ 0.9×.

    .venv/bin/python -m bench.concurrency [--threads 8] [--per-thread 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import threading
import time

from bench.common import library_versions, machine_facts


def png_digest(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--per-thread", type=int, default=5)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="sequential+concurrent pairs")
    args = parser.parse_args()

    import torch

    from core.generation import GenerationRequest
    from core.local import LocalBackend

    print(machine_facts())
    print(library_versions("torch", "diffusers"), f"· torch threads {torch.get_num_threads()}")
    backend = LocalBackend(model="demo", device="cpu", dtype=args.dtype)
    backend.ensure_loaded()

    def request(thread: int, index: int) -> GenerationRequest:
        return GenerationRequest(
            prompt=f"session {thread}: a lighthouse, picture {index}",
            seed=1000 + thread * args.per_thread + index,
            width=512,
            height=512,
            num_inference_steps=args.steps,
        )

    jobs = [(t, i) for t in range(args.threads) for i in range(args.per_thread)]
    backend.generate(request(0, 0))  # warm-up

    def sequential_round() -> tuple[float, dict[tuple[int, int], str]]:
        start = time.perf_counter()
        digests = {job: png_digest(backend.generate(request(*job)).images[0]) for job in jobs}
        return time.perf_counter() - start, digests

    errors: list[BaseException] = []

    def concurrent_round() -> tuple[float, dict[tuple[int, int], str]]:
        digests: dict[tuple[int, int], str] = {}
        barrier = threading.Barrier(args.threads)

        def session(thread: int) -> None:
            barrier.wait()
            try:
                for index in range(args.per_thread):
                    image = backend.generate(request(thread, index)).images[0]
                    digests[(thread, index)] = png_digest(image)
            except BaseException as exc:  # reported below, not hidden
                errors.append(exc)

        workers = [threading.Thread(target=session, args=(t,)) for t in range(args.threads)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return time.perf_counter() - start, digests

    # Alternate S, C, C, S, … so a change in machine load hits both sides alike.
    seq_times, conc_times, reference, results = [], [], None, []
    for round_ in range(args.rounds):
        order = (sequential_round, concurrent_round)
        for fn in order if round_ % 2 == 0 else reversed(order):
            seconds, digests = fn()
            if fn is sequential_round:
                seq_times.append(seconds)
                reference = reference or digests
            else:
                conc_times.append(seconds)
                results.append(digests)
    sequential, concurrent = sum(seq_times), sum(conc_times)
    print("rounds, seconds: sequential", [round(t, 1) for t in seq_times], "· concurrent",
          [round(t, 1) for t in conc_times])  # fmt: skip

    identical = min(
        sum(digests.get(job) == digest for job, digest in reference.items()) for digests in results
    )
    n = len(jobs) * args.rounds
    ratio = (n / concurrent) / (n / sequential)
    print()
    print(
        f"| run | {n} generations ({args.rounds} rounds), 512², {args.steps} steps, "
        f"{args.dtype} | images/s |"
    )
    print("| --- | --- | --- |")
    print(f"| sequential, 1 thread | {sequential:.1f} s | {n / sequential:.2f} |")
    print(
        f"| concurrent, {args.threads} threads × {args.per_thread} | {concurrent:.1f} s | "
        f"{n / concurrent:.2f} |"
    )
    per_round = len(jobs)
    print(
        f"identical to the single-thread reference: {identical}/{per_round} in every concurrent "
        f"round (target {per_round}/{per_round})"
    )
    print(f"errors: {len(errors)}{' — ' + repr(errors[0]) if errors else ''}")
    print(f"throughput concurrent / sequential: {ratio:.2f}× (target ≥ 0.9×)")


if __name__ == "__main__":
    main()
