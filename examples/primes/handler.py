"""Counts the primes below a number: the Python example of serverless.yml.

Below a few million it answers within Lambda's 10-second limit; above, the invocation
times out, its failure record reaches the overflow queue, and the runner finishes the
count on the Python runner image, unmodified. Invoke it asynchronously with
{"below": 50000000}.
"""

import math


def handler(event, context):
    below = int(event.get("below", 1000))
    sieve = bytearray([1]) * below
    sieve[0:2] = b"\x00\x00"
    for n in range(2, math.isqrt(below) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytes(len(range(n * n, below, n)))
    count = sum(sieve)
    print(f"{count} primes below {below} (request {context.aws_request_id})")
    return {"below": below, "primes": count}
