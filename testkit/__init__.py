"""The test kit: throwaway servers and crafted inputs shared by `tests/` and `bench/`.

Real objects, no mocks: a PostgreSQL cluster in a temp folder (`pg`), a loopback server
speaking the text-to-image task protocol with the tiny pipeline behind it
(`loopback_server`), a Hugging Face Hub stand-in serving a pipeline folder (`hub_standin`),
hostile PNGs and texts (`hostile`), a pipeline's raw pixels for bit-exact comparisons
(`render`), and a fresh-process runner that reads a snippet's `RESULT` JSON (`child`).
Development only: not part of the installed app
(pyproject lists `core` alone), and nothing in `core` or `pages` imports it.
"""
