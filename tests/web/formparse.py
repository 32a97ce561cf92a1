"""A page's forms as a browser submits them: fields found by their label, buttons by their text."""
from html.parser import HTMLParser

from werkzeug.datastructures import MultiDict


class _Parser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms, self.labels = {}, {}
        self.form, self.legends, self.text, self.select = None, [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.form = a.get("id") or a.get("action", "")
            self.forms[self.form] = []
        elif tag == "fieldset":
            self.legends.append("")
        elif tag == "legend":
            self.text = ["legend", ""]
        elif tag == "label":
            self.text = ["label", "", a.get("for")]
        elif tag in ("input", "select", "textarea", "button") and self.form is not None:
            el = {"tag": tag, "name": a.get("name"), "type": a.get("type", "submit" if tag == "button" else tag),
                  "value": a.get("value", ""), "checked": "checked" in a, "id": a.get("id"),
                  "legends": tuple(self.legends), "options": [], "text": "", "attrs": a}
            self.forms[self.form].append(el)
            if tag == "select":
                self.select = el
            elif tag in ("button", "textarea"):
                self.text = ["el", el]
        elif tag == "option" and self.select is not None:
            opt = {"value": a.get("value"), "selected": "selected" in a, "text": ""}
            self.select["options"].append(opt)
            self.text = ["opt", opt]

    def handle_data(self, data):
        if self.text is None:
            return
        if self.text[0] in ("legend", "label"):
            self.text[1] += data
        else:
            self.text[1]["text"] += data

    def handle_endtag(self, tag):
        t = self.text
        if tag == "legend" and t and t[0] == "legend":
            self.legends[-1], self.text = " ".join(t[1].split()), None
        elif tag == "label" and t and t[0] == "label":
            self.labels[t[2]], self.text = " ".join(t[1].split()), None
        elif tag in ("button", "textarea", "option") and t and t[0] in ("el", "opt"):
            if t[0] == "opt" and t[1]["value"] is None:
                t[1]["value"] = t[1]["text"].strip()
            if t[0] == "el" and tag == "textarea":
                t[1]["value"] = t[1]["text"]
            self.text = None
        elif tag == "select":
            self.select = None
        elif tag == "fieldset" and self.legends:
            self.legends.pop()
        elif tag == "form":
            self.form = None


def forms(html):
    """{form id (or action): Form} of a page."""
    p = _Parser()
    p.feed(html)
    return {key: Form(fields, p.labels) for key, fields in p.forms.items()}


class Form:
    def __init__(self, fields, labels):
        self.fields, self.labels = fields, labels

    def field(self, label, within=None):
        """The one field whose label is `label` (or starts with it), inside the fieldset legend `within`."""
        found = [f for f in self.fields if f["id"] and f["id"] in self.labels
                 and (within is None or within in f["legends"])]
        exact = [f for f in found if self.labels[f["id"]] == label]
        matches = exact or [f for f in found if self.labels[f["id"]].startswith(label)]
        assert len(matches) == 1, (label, within, [self.labels[f["id"]] for f in found])
        return matches[0]

    def has(self, label, within=None):
        return any(self.labels.get(f["id"], "").startswith(label) and (within is None or within in f["legends"])
                   for f in self.fields if f["id"])

    def set(self, label, value, within=None):
        f = self.field(label, within)
        if f["tag"] == "select":
            assert value in [o["value"] for o in f["options"]], (label, value, f["options"])
            for o in f["options"]:
                o["selected"] = o["value"] == value
        else:
            f["value"] = value
        return self

    def check(self, label, on=True, within=None):
        self.field(label, within)["checked"] = on
        return self

    def options(self, label, within=None):
        return [(o["value"], " ".join(o["text"].split())) for o in self.field(label, within)["options"]]

    def checked(self, within=None):
        """Labels of the ticked boxes."""
        return [self.labels[f["id"]] for f in self.fields if f["type"] == "checkbox" and f["checked"]
                and (within is None or within in f["legends"])]

    def button(self, text, within=None):
        found = [f for f in self.fields if f["tag"] == "button" and " ".join(f["text"].split()) == text
                 and (within is None or within in f["legends"])]
        assert len(found) == 1, (text, within)
        return found[0]

    def data(self, button=None, within=None):
        """What the browser sends when `button` (its text) is pressed."""
        pairs = []
        for f in self.fields:
            if not f["name"] or f["type"] in ("submit", "button", "reset"):
                continue
            if f["type"] in ("checkbox", "radio"):
                if f["checked"]:
                    pairs.append((f["name"], f["value"] or "on"))
            elif f["tag"] == "select":
                chosen = [o for o in f["options"] if o["selected"]] or f["options"][:1]
                pairs.extend((f["name"], o["value"]) for o in chosen)
            else:
                pairs.append((f["name"], f["value"]))
        if button:
            b = self.button(button, within)
            if b["name"]:
                pairs.append((b["name"], b["value"]))
        return MultiDict(pairs)
