"""A paragraph in each of Bark's 13 languages, as its expected sentences.

Each holds what a segmenter gets wrong: abbreviations (Dr., Sra., z. B., godz., т. е., örn., डॉ.),
decimals (3.30, 2,5), Spanish ¿…? and ¡…!, French spaces before ! and ?, the Hindi danda, CJK full
stops with no space after them and a quoted Japanese sentence. benchmarks/sentence_splitters.py
scores the segmenters on them; tests/test_languages.py holds text.py to them.
"""

from __future__ import annotations

#: Sentences of one paragraph per language; a paragraph is its sentences joined by `joiner(code)`.
SENTENCES: dict[str, list[str]] = {
    "en": [
        "Dr. Smith arrived at 3.30 in the afternoon.",
        "The meeting with Mrs. Jones lasted 2.5 hours!",
        "Was it worth it?",
        "Nobody in the U.S. office knows.",
    ],
    "de": [
        "Dr. Müller kam um 14.30 Uhr am Bahnhof an.",
        "Das Treffen dauerte ca. zwei Stunden, z. B. wegen der vielen Fragen.",
        "War es das wert?",
        "Niemand weiß es!",
    ],
    "es": [
        "¿Dónde está la Sra. García?",
        "Llegó a las 3.30 de la tarde.",
        "¡Qué sorpresa tan grande!",
        "El billete costó 2,5 euros por persona.",
    ],
    "fr": [
        "M. Dupont est arrivé à la gare à 15 h 30.",
        "Le billet coûtait 12,50 euros !",
        "Était-ce trop cher ?",
        "Personne ne le sait, p. ex. le directeur.",
    ],
    "hi": [
        "आज मौसम बहुत अच्छा है।",
        "क्या आप मेरे साथ पार्क चलेंगे?",
        "डॉ. शर्मा भी हमारे साथ आएंगे।",
        "हम वहाँ 2.5 घंटे रुकेंगे!",
    ],
    "it": [
        "Il Sig. Rossi è arrivato alle 15.30.",
        "La riunione è durata 2,5 ore!",
        "Ne valeva la pena?",
        "Nessuno lo sa, ecc. ecc.",
    ],
    "ja": [
        "今日はとても良い天気です。",
        "公園に散歩に行きませんか？",
        "入場料は3.5ドルでした！",
        "「本当ですか。」と彼は驚いて言った。",
    ],
    "ko": [
        "오늘은 날씨가 정말 좋습니다.",
        "공원에 산책하러 갈까요?",
        "입장료는 3.5달러였어요!",
        "김 박사님도 함께 오실 거예요.",
    ],
    "pl": [
        "Dr Kowalski przyjechał o godz. 15.30 na dworzec.",
        "Spotkanie trwało 2,5 godziny!",
        "Czy było warto?",
        "Nikt tego nie wie, np. dyrektor.",
    ],
    "pt": [
        "O Sr. Silva chegou às 15h30 à estação.",
        "A reunião durou 2,5 horas!",
        "Valeu a pena?",
        "Ninguém sabe, nem mesmo o Dr. Costa.",
    ],
    "ru": [
        "Д-р Иванов приехал в 15.30 на вокзал.",
        "Встреча длилась 2,5 часа, т. е. очень долго!",
        "Стоило ли оно того?",
        "Никто не знает.",
    ],
    "tr": [
        "Dr. Yılmaz saat 15.30'da istasyona geldi.",
        "Toplantı 2,5 saat sürdü!",
        "Buna değer miydi?",
        "Kimse bilmiyor, örn. müdür bile.",
    ],
    "zh": [
        "今天天气很好。",
        "我们去公园散步吧！",
        "票价是3.5元，你觉得怎么样？",
        "这是一个很长的句子，用来测试中文的分句和分块是否正确。",
    ],
}

#: Long paragraphs (several chunks at the default chunk size) for the HTTP tests.
LONG_ZH = (
    "今天天气很好，阳光明媚，微风不燥。我们一起去公园散步吧！公园里有很多人在跑步、下棋和放风筝。"
    "湖边的柳树已经发芽了，看起来非常漂亮。你觉得我们中午在哪里吃饭比较好？附近有一家小餐馆，"
    "听说他们的饺子和面条都很好吃，价格也不贵。吃完饭以后，我们还可以去博物馆看看新的展览。"
)
LONG_JA = (
    "今日はとても良い天気ですね。一緒に公園へ散歩に行きませんか？公園では、たくさんの人が走ったり、"
    "将棋をしたり、凧を揚げたりしています。池のそばの桜はもう咲き始めていて、とてもきれいです。"
    "お昼ご飯はどこで食べましょうか？近くに小さな食堂があって、そこのラーメンと餃子はとても美味しいそうです。"
)


def joiner(code: str) -> str:
    """Chinese and Japanese sentences follow each other without a space; the rest with one."""
    return "" if code in {"zh", "ja"} else " "


def paragraph(code: str) -> str:
    return joiner(code).join(SENTENCES[code])
