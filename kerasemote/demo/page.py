"""The demo's ``index.html``: one self-contained page (relative links) with every figure,
the success-rate table and the timings of a :class:`~kerasemote.demo.result.DemoResult`."""

from __future__ import annotations

import html
import os
from PIL import Image

from kerasemote.data.emotions import EMOTION_TOKENS, EMOTION_WORDS
from kerasemote.demo.result import DemoResult
from kerasemote.demo.spec import BODY_TOKEN, CONCEPT_LORA_TARGETS, row_label

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 0.92em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.px { image-rendering: pixelated; } figure { display: inline-block; margin: 0.5em 1em 0.5em 0; }
figcaption { font-size: 0.85em; color: #555; } .note { color: #a60; }
"""


def write_page(result: DemoResult, path: str) -> str:
    """Write the page for ``result``; image links are relative to the page's folder."""
    page = _Page(result)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page.render())
    return path


class _Page:
    def __init__(self, result: DemoResult):
        self.result, self.files, self.out = result, result.files, result.out_dir

    def render(self) -> str:
        c = self.result.config
        parts = [
            "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            "<title>kerasemote demo</title>", f"<style>{STYLE}</style></head><body>",
            "<h1>kerasemote demo</h1>",
            f"<p>Model <code>{_e(c.model)}</code>, {c.size} px, {c.sample_steps} DDIM steps, guidance "
            f"{c.guidance:g} ({c.sticker_guidance:g} for the sticker rows), seed {c.seed}. Everything below was "
            f"made offline by <code>kerasemote demo</code> in "
            f"<b>{self.result.total_seconds:.0f} s</b>.</p>",
            self._timings(), self._data(), self._textual_inversion(), self._lora(), self._samples(),
            self._interpolation(), self._judge(), self._notes(), "</body></html>",
        ]
        return "\n".join(p for p in parts if p)

    # ------------------------------------------------------------------ sections

    def _timings(self) -> str:
        rows = [(stage, f"{seconds:.1f}") for stage, seconds in self.result.timings.items()]
        rows.append(("total", f"{self.result.total_seconds:.1f}"))
        body = "".join(f"<tr><td>{_e(s)}</td><td class=num>{t}</td></tr>" for s, t in rows)
        return f"<h2>Timings</h2><table><tr><th>stage</th><th>seconds</th></tr>{body}</table>"

    def _data(self) -> str:
        r = self.result
        used = ", ".join(r.sources) or "none"
        skipped = "".join(f"<li>{_e(name)}: {_e(why)}</li>" for name, why in r.skipped_sources.items())
        faces = ", ".join(f"{k} {v}" for k, v in r.data.get("emotion_faces", {}).items())
        lines = [
            "<h2>1. Data</h2>",
            f"<p>Packaged emoji sets: {_e(used)}"
            + (f" ({r.data['written']} images at {r.config.size} px)" if "written" in r.data else "") + ".</p>",
            f"<p class=note>Skipped sets:</p><ul>{skipped}</ul>" if skipped else "",
            f"<p>Labelled emotion faces: {_e(faces)}.</p>",
            self._figure("contact_sheet", "a sample of the prepared set (vendor, emotion label)"),
        ]
        return "\n".join(lines)

    def _textual_inversion(self) -> str:
        c = self.result.config
        return "\n".join([
            "<h2>2. Textual inversion</h2>",
            f"<p><code>{_e(c.concept_token)}</code> from the {c.concept} images below (initialized from "
            f"<code>{_e(c.init_token)}</code>), and <code>&lt;happy&gt; &lt;sad&gt; &lt;angry&gt; &lt;in-love&gt;"
            f"</code> from the labelled faces (initialized from {self._emotion_init()}); {c.steps} steps each, batch "
            f"{c.batch_size}. Embeddings: {self._link('ti_concept_embeddings')}, {self._link('ti_emotions_embeddings')}"
            " (one <code>.npy</code> per token beside each).</p>",
            self._figure("concept_images", "the concept's training images", scale=2),
            self._figure("ti_concept_loss", "concept loss"), self._figure("ti_emotions_loss", "emotions loss"),
        ])

    def _emotion_init(self) -> str:
        words = [self.result.config.emotion_init] if self.result.config.emotion_init else EMOTION_WORDS.values()
        return ", ".join(f"<code>{_e(w)}</code>" for w in words)

    def _lora(self) -> str:
        c = self.result.config
        if "lora_concept" not in self.result.files:
            return "<h2>3. LoRA</h2><p class=note>Skipped (<code>--concept-lora-steps 0</code>).</p>"
        return "\n".join([
            "<h2>3. LoRA</h2>",
            f"<p>Adapters of rank {c.concept_lora_rank} on the UNet's {' and '.join(CONCEPT_LORA_TARGETS)}, trained "
            f"{c.concept_lora_steps} steps (learning rate {c.concept_lora_learning_rate:g}) on the same concept "
            f"images with <code>{_e(c.concept_token)}</code> in the captions, in a second copy of the model: the "
            "token alone steers what the model already draws, the adapters change how it draws. Only the rows "
            f"marked <i>+ LoRA</i> use them. Adapters: {self._link('lora_concept')}; to draw with them, from this "
            f"folder: <code>kerasemote generate \"a {_e(c.concept_token)} emoji\" --embeddings "
            f"{_e(self.result.files.get('ti_concept_embeddings', ''))} --lora {_e(self.result.files['lora_concept'])}"
            "</code>.</p>",
            self._figure("lora_concept_loss", "LoRA loss"),
            self._sticker_lora(),
        ])

    def _sticker_lora(self) -> str:
        c = self.result.config
        if "lora_stickers" not in self.result.files:
            return "<p class=note>Sticker LoRA skipped (<code>--sticker-lora-steps 0</code>).</p>"
        return "\n".join([
            f"<p>Broccoli stickers: <code>&lt;happy-broccoli&gt;</code> ... <code>&lt;in-love-broccoli&gt;</code> "
            f"and the faceless body <code>{_e(BODY_TOKEN)}</code>, learned at once by textual inversion from "
            f"{c.sticker_per_emotion} drawn stickers each ({self._link('ti_stickers_embeddings')}), then rank-"
            f"{c.sticker_lora_rank} adapters on top, {c.sticker_lora_steps} steps of {c.sticker_lora_batch_size} "
            f"({self._link('lora_stickers')}). The same model draws the combined row: <code>&lt;happy&gt;</code> "
            f"(the emoji face token) beside <code>{_e(BODY_TOKEN)}</code>.</p>",
            self._figure("lora_stickers_loss", "sticker LoRA loss"),
        ])

    def _samples(self) -> str:
        c = self.result.config
        return "\n".join([
            "<h2>4. Generations</h2>",
            f"<p>The first {c.samples} of each row's {c.num_images} generations, which the judges score below "
            "(all of them in each row's folder); each column starts from the same noise.</p>",
            self._figure("samples", "every row's first generations", scale=3),
        ])

    def _interpolation(self) -> str:
        c = self.result.config
        return "\n".join([
            "<h2>5. Interpolation</h2>",
            f"<p><code>{_e(c.concept_token)}</code> to <code>{_e(EMOTION_TOKENS[c.mix_with])}</code> "
            "(slerp of the token embeddings, same noise for every image; alpha is the share of the second).</p>",
            self._figure("interpolation_grid", "sweep", scale=3), self._figure("interpolation_gif", "GIF", scale=3),
        ])

    def _judge(self) -> str:
        j = self.result.judge
        held_out = ", ".join(f"{k} {v}" for k, v in j.get("test_classes", {}).items())
        accuracy = (f" Accuracy on the {j['test_images']} real faces of the test split ({_e(held_out)}; every "
                    f"vendor of an emoji stays in one split): <b>{j['test_accuracy']:.1%}</b>."
                    if "test_accuracy" in j else "")
        classes = _e(", ".join(j.get("class_names", [])))
        if j.get("source") == "trained":
            runs = j.get("runs", {})
            gate = runs.get("gate", {})
            members = [r for name, r in runs.items() if name != "gate"]
            faces = members[0]["images"] if members else {}
            about = (f"<p>Classes {classes}. Trained from scratch here, {j.get('epochs')} epochs each: a ResNet-50 "
                     f"<i>gate</i> ({_e(_counts_text(gate.get('images', {})))}) tells a face from the concept and "
                     f"other emoji; {len(members)} ResNet-50s on the four emotions' faces only "
                     f"({_e(_counts_text(faces))}), one seed each, tell which emotion a face shows. A face's "
                     "emotion is their averaged answer times the gate's <i>face</i> probability. One network "
                     "for every class, from one seed, judged the same images very differently from run to run "
                     f"(too few faces to learn from); averaging seeds steadies it.{accuracy}</p>")
        else:
            about = f"<p>Classes {classes}, loaded from <code>{_e(j.get('source', ''))}</code>.{accuracy}</p>"
        return "\n".join([
            "<h2>6. Judge and success rates</h2>",
            about,
            self._figure("classifier_history", "judge training"), self._figure("confusion_matrix", "held-out faces"),
            self._figure("misclassified", "held-out faces it got wrong"),
            self._held_out(),
            self._table(),
            f"<p>Also as {self._link('success_json')} and {self._link('success_csv')}.</p>",
            self._generations(),
        ])

    def _held_out(self) -> str:
        held_out = self.result.judge.get("held_out", {})
        if not held_out:
            return ""
        rows = "".join(f"<tr><td>{_e(name)}</td><td class=num>{h['images']}</td><td>{_e(_counts_text(h['classes']))}"
                       f"</td><td class=num>{h['accuracy']:.1%}</td></tr>" for name, h in held_out.items())
        return ("<p>The judges on images they never trained on (the drawn sets' test splits, the vendor judge's "
                "held-out names):</p><table><tr><th>held-out set</th><th>images</th><th>per class</th>"
                f"<th>accuracy</th></tr>{rows}</table>")

    def _table(self) -> str:
        head = ("<tr><th>row</th><th>kind</th><th>intended</th><th>images</th><th>success</th>"
                "<th>among emotions</th><th>mean p</th><th>spread</th><th>predicted</th></tr>")
        rows = []
        for s in self.result.scores:
            among = "-" if s.emotion_rate is None else f"{s.emotion_rate:.1%}"
            spread = "-" if s.spread is None else f"{s.spread:.1f}"
            predicted = ", ".join(f"{k} {v}" for k, v in sorted(s.predicted.items(), key=lambda kv: -kv[1]))
            rows.append(
                f"<tr><td><a href=\"{_e(s.folder)}/grid.png\" title=\"{_e(s.prompt)}\">{_e(s.name or s.prompt)}</a>"
                f"</td><td>{s.kind}</td><td>{_e(s.intended)}</td><td class=num>{s.num_images}</td>"
                f"<td class=num>{s.success_rate:.1%}</td><td class=num>{among}</td>"
                f"<td class=num>{s.mean_confidence:.3f}</td><td class=num>{spread}</td><td>{_e(predicted)}</td></tr>"
            )
        chance = 1 / max(1, len(self.result.judge.get("class_names", [])))
        return (f"<table>{head}{''.join(rows)}</table><p><i>success</i>: the judge's top class is the intended "
                f"one (chance {chance:.0%}); <i>among emotions</i>: the top class among the four emotions is the "
                "intended one (chance 25 %); <i>spread</i>: the mean per-pixel standard deviation across the row's "
                "images in uint8 levels (near 0 when a row repeats one image). Style rows are judged by the vendor "
                "judge (chance 33 %).</p>")

    def _generations(self) -> str:
        figures = "".join(
            f'<figure><img class=px src="{_e(s.folder)}/grid.png" alt="">'
            f"<figcaption>{_e(s.name or row_label(s.prompt, s.kind))}</figcaption></figure>" for s in self.result.scores
        )
        return f"<details><summary>Every scored image</summary>{figures}</details>" if figures else ""

    def _notes(self) -> str:
        if not self.result.notes:
            return ""
        items = "".join(f"<li>{_e(n)}</li>" for n in self.result.notes)
        return f"<h2>Notes</h2><ul class=note>{items}</ul>"

    # ------------------------------------------------------------------ pieces

    def _figure(self, key: str, caption: str, scale: int = 1) -> str:
        file = self.files.get(key)
        if not file:
            return ""
        width = ""
        if scale > 1:  # small pixel images, shown enlarged (and kept sharp by image-rendering)
            with Image.open(os.path.join(self.out, file)) as image:
                width = f' width="{image.width * scale}"'
        return (f'<figure><img class=px src="{_e(file)}"{width} alt="{_e(caption)}">'
                f"<figcaption>{_e(caption)}</figcaption></figure>")

    def _link(self, key: str) -> str:
        file = self.files.get(key)
        return f'<a href="{_e(file)}"><code>{_e(file)}</code></a>' if file else "(none)"


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _counts_text(counts: dict) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())
