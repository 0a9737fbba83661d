// A small markdown renderer that builds DOM nodes and never parses HTML.
//
// Answers come from a remote model and may contain anything, including "<script>" or
// "<img onerror=...>": every piece of answer text reaches the page through document.createTextNode
// or textContent, so markup in an answer is shown as text. Links keep only http(s) and mailto
// targets. Supported: fenced code blocks (an unterminated fence, as while an answer streams, runs
// to the end), headings, bullet and numbered lists, block quotes, rules, paragraphs; inline code,
// bold, italic, links, and images: an image is shown only from this page's own origin (the
// service's signed links to images the model drew); any other image is a link, so an answer
// cannot make the browser fetch from elsewhere (the page's CSP would refuse it too).
"use strict";

const Markdown = (() => {
  const SAFE_LINK = /^(https?:\/\/|mailto:)/i;
  // One inline token: `code`, **bold**, *italic* or _italic_, [text](url) or ![alt](url).
  const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|\*(?=\S)([^*]*?\S)\*|\b_(?=\S)([^_]*?\S)_\b|(!?)\[([^\]]*)\]\(([^)\s]+)\)/g;

  function ownImage(target) {
    try {
      const url = new URL(target, location.href);
      return url.origin === location.origin && /^https?:$/.test(url.protocol);
    } catch (_) {
      return false;
    }
  }

  function el(tag, className) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    return node;
  }

  function appendInline(parent, text) {
    // A regex of its own per call: bold and italic recurse, and a shared global regex would
    // have its lastIndex reset under the outer loop's feet.
    const pattern = new RegExp(INLINE.source, "g");
    let last = 0;
    for (let match; (match = pattern.exec(text)); ) {
      if (match.index > last) parent.appendChild(document.createTextNode(text.slice(last, match.index)));
      last = pattern.lastIndex;
      if (match[1]) {
        const code = el("code");
        code.textContent = match[2];
        parent.appendChild(code);
      } else if (match[3] !== undefined) {
        appendInline(parent.appendChild(el("strong")), match[3]);
      } else if (match[4] !== undefined || match[5] !== undefined) {
        appendInline(parent.appendChild(el("em")), match[4] !== undefined ? match[4] : match[5]);
      } else if (match[7] !== undefined) {
        const target = match[8];
        const image = match[6] === "!";
        if (image && ownImage(target)) {
          const picture = el("img", "answer-image");
          picture.src = target;
          picture.alt = match[7];
          const link = el("a");
          link.href = target;
          link.target = "_blank";
          link.rel = "noopener noreferrer";
          link.appendChild(picture);
          parent.appendChild(link);
        } else if (SAFE_LINK.test(target) && (match[7] || image)) {
          const link = el("a");
          link.href = target;
          link.rel = "noopener noreferrer nofollow";
          link.target = "_blank";
          if (image) link.textContent = "image: " + (match[7] || target);
          else appendInline(link, match[7]);
          parent.appendChild(link);
        } else {
          parent.appendChild(document.createTextNode(match[0]));
        }
      }
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function appendLines(parent, lines) {
    lines.forEach((line, index) => {
      if (index) parent.appendChild(el("br"));
      appendInline(parent, line);
    });
  }

  function codeBlock(language, lines) {
    const figure = el("div", "code-block");
    const bar = el("div", "code-bar");
    const label = el("span", "code-lang");
    label.textContent = language || "code";
    const copy = el("button", "code-copy");
    copy.type = "button";
    copy.textContent = "Copy";
    const source = lines.join("\n");
    copy.addEventListener("click", () => {
      if (navigator.clipboard) navigator.clipboard.writeText(source).then(() => {
        copy.textContent = "Copied";
        setTimeout(() => { copy.textContent = "Copy"; }, 1200);
      });
    });
    bar.append(label, copy);
    const pre = el("pre");
    const code = el("code");
    if (language) code.dataset.language = language;
    code.textContent = source;
    pre.appendChild(code);
    figure.append(bar, pre);
    return figure;
  }

  const FENCE = /^\s*(```+|~~~+)\s*([\w+#.-]*)/;
  const HEADING = /^(#{1,6})\s+(.*)$/;
  const BULLET = /^\s*[-*+]\s+(.*)$/;
  const NUMBERED = /^\s*(\d+)[.)]\s+(.*)$/;
  const QUOTE = /^\s*>\s?(.*)$/;
  const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;

  function render(text) {
    const root = document.createDocumentFragment();
    const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      const fence = FENCE.exec(line);
      if (fence) {
        const body = [];
        i += 1;
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
        i += 1; // the closing fence (or the end of an answer still streaming)
        root.appendChild(codeBlock(fence[2], body));
        continue;
      }
      if (!line.trim()) { i += 1; continue; }
      const heading = HEADING.exec(line);
      if (heading) {
        appendInline(root.appendChild(el("h" + Math.min(heading[1].length + 2, 6))), heading[2]);
        i += 1;
        continue;
      }
      if (RULE.test(line)) { root.appendChild(el("hr")); i += 1; continue; }
      if (BULLET.test(line) || NUMBERED.test(line)) {
        const ordered = !BULLET.test(line);
        const pattern = ordered ? NUMBERED : BULLET;
        const list = el(ordered ? "ol" : "ul");
        if (ordered) list.start = Number(NUMBERED.exec(line)[1]);
        while (i < lines.length && pattern.test(lines[i])) {
          const match = pattern.exec(lines[i]);
          appendInline(list.appendChild(el("li")), ordered ? match[2] : match[1]);
          i += 1;
        }
        root.appendChild(list);
        continue;
      }
      if (QUOTE.test(line)) {
        const quoted = [];
        while (i < lines.length && QUOTE.test(lines[i])) quoted.push(QUOTE.exec(lines[i++])[1]);
        appendLines(root.appendChild(el("blockquote")), quoted);
        continue;
      }
      const paragraph = [];
      while (i < lines.length && lines[i].trim() && !FENCE.test(lines[i]) && !HEADING.test(lines[i])
             && !BULLET.test(lines[i]) && !NUMBERED.test(lines[i]) && !QUOTE.test(lines[i])) {
        paragraph.push(lines[i++]);
      }
      appendLines(root.appendChild(el("p")), paragraph);
    }
    return root;
  }

  return { render };
})();
