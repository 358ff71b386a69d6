"""README.md and docs/: short enough to read, and every link in them resolves."""
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, 'README.md')
DOCS = sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))
MAX_README_LINES = 300
FENCE = re.compile(r'^(```|~~~).*?^\1[ \t]*$', re.M | re.S)
LINK = re.compile(r'(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
HEADING = re.compile(r'^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$', re.M)


def _text(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def slug(heading):
    """GitHub's anchor for a heading: lower case, markup and punctuation
    dropped, spaces to hyphens."""
    text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # a link's text
    text = text.replace('`', '').replace('*', '').lower()
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def anchors(path):
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 for repeats."""
    seen, out = {}, set()
    for m in HEADING.finditer(FENCE.sub('', _text(path))):
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else '{}-{}'.format(base, n))
    return out


def relative_links(path):
    """``(target, fragment)`` of every link that is not a URL, outside code."""
    for m in LINK.finditer(FENCE.sub('', _text(path))):
        target = m.group(1)
        if re.match(r'[a-z][a-z0-9+.-]*:', target):  # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition('#')
        yield file_part, fragment


def test_slug_follows_github():
    assert slug('What the main job prints, and which number to trust') == \
        'what-the-main-job-prints-and-which-number-to-trust'
    assert slug('The numba path (`numbapath`)') == 'the-numba-path-numbapath'
    assert slug('Training, snapshots and resuming') == 'training-snapshots-and-resuming'


def test_readme_is_short():
    with open(README, encoding='utf-8') as f:
        n = sum(1 for _ in f)
    assert n <= MAX_README_LINES, 'README.md has {} lines; at most {}'.format(
        n, MAX_README_LINES)


def test_quick_start_is_within_the_first_100_lines():
    lines = _text(README).split('\n')
    start = next(i for i, line in enumerate(lines) if line.startswith('## Quick start'))
    fence = next(i for i in range(start, len(lines)) if lines[i].startswith('```python'))
    end = next(i for i in range(fence + 1, len(lines)) if lines[i].startswith('```'))
    assert end < 100, 'the quick start ends on line {}'.format(end + 1)
    assert 'input_shape=' in '\n'.join(lines[fence:end])
    assert 'target_acc=' in '\n'.join(lines[fence:end])


def test_docs_exist_and_are_linked_from_the_readme():
    assert DOCS, 'no docs/*.md'
    linked = {os.path.normpath(os.path.join(ROOT, f)) for f, _ in relative_links(README) if f}
    unlinked = [os.path.relpath(p, ROOT) for p in DOCS if p not in linked]
    assert not unlinked, 'not linked from README.md: {}'.format(', '.join(unlinked))


def test_every_relative_link_resolves():
    broken = []
    for path in [README] + DOCS:
        for file_part, fragment in relative_links(path):
            target = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) \
                if file_part else path
            where = '{}: {}{}'.format(os.path.relpath(path, ROOT), file_part,
                                      '#' + fragment if fragment else '')
            if not os.path.exists(target):
                broken.append(where + ' (no such file)')
            elif fragment and target.endswith('.md') and fragment not in anchors(target):
                broken.append(where + ' (no such heading)')
    assert not broken, 'broken links:\n' + '\n'.join(broken)
