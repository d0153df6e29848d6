"""Bounds on every HTTP exchange with a server keysync does not control (Coder, Vault, Kubernetes).

    deadline   one deadline for a whole request, however slowly its bytes arrive; an interrupt
               that ends requests stuck on the network
    answers    an answer's body bounded after decoding, and JSON bounded in nesting
    tls        what a failed certificate check means, in one phrase

Adapters import this package; it imports nothing of keysync's.
"""
