"""The Streamlit side the pages share: widgets and drawing helpers, no model code.

Pages call these and `core` (use cases, backends, history); `core` never imports from here.

- `page`     — `start(title)`: the sign-in gate, title, settings and backend of every page;
- `access`   — the sign-in screen, who the visitor is, the signed-in user's box;
- `text`     — `for_visitor`: messages with server paths hidden from remote visitors;
- `sidebar`  — the model and its status line, which pages rewrite while they work;
- `load`     — the model load's progress, its Cancel, a load another session started;
- `sharing`  — the Mine/Everyone filter, owners, the admins' deleted images and audit trail;
- `generator`, `results` — the Generate page's form and its output (result, strip);
- `gallery`  — the Seed history page's cards, details panel and PNG import;
- `hardware` — the Hardware page's model, queue and plan sections.
"""
