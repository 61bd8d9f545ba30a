"""Japanese words and templates: the synthetic generator composes titles, descriptions, names.

Each genre has its own words, so titles and descriptions of one genre share characters and
character n-gram TF-IDF carries genre signal; generic words are shared by every genre, as in
real catalogues. Words are joined without spaces, like real Japanese titles.

The composing functions take pre-drawn uniform numbers in [0, 1) instead of a random generator,
so the caller draws them in bulk with numpy and the output depends only on the seed.
"""

from __future__ import annotations

from collections.abc import Sequence


def _words(text: str) -> tuple[str, ...]:
    """Whitespace-separated words of a block of text (no word contains a space)."""
    return tuple(text.split())


# Most popular first: the generator gives genre k a Zipf weight 1 / (k + 1).
GENRES: tuple[str, ...] = _words(
    """
    ドラマ コメディ アクション 恋愛 アニメ ホラー ミステリー SF ドキュメンタリー 音楽 旅行 料理
    スポーツ ファンタジー 時代劇 ゲーム実況 ペット 教育
    """
)

GENRE_WORDS: dict[str, tuple[str, ...]] = {
    "ドラマ": _words(
        """
        家族 絆 再会 別れ 涙 約束 人生 運命 兄弟 姉妹 父と娘 病院 法廷 嘘 秘密 決断 旅立ち 故郷
        夜明け 群像 遺言 家族会議 職場 転機 選択 再生 母の背中 最後の手紙 下町 十年後
        """
    ),
    "コメディ": _words(
        """
        爆笑 お笑い ドタバタ 漫才 コント ギャグ 珍道中 大騒動 ずっこけ 抱腹絶倒 ツッコミ ボケ
        勘違い 居候 凸凹コンビ 笑劇 喜劇 おバカ ハプニング 珍事件 お騒がせ 爆笑王 天然 にぎやか
        いたずら 大家族 ゆかい ぼやき 寄席 笑いの神様
        """
    ),
    "アクション": _words(
        """
        激闘 爆破 銃撃 追跡 格闘 奪還 最強 死闘 潜入 脱出 特殊部隊 傭兵 決戦 襲撃 カーチェイス
        拳 反撃 護衛 極限 突破 狙撃 鉄拳 爆走 救出 闘魂 戦場 無双 ミッション 要塞 怒りの銃弾
        """
    ),
    "恋愛": _words(
        """
        恋 初恋 告白 片想い 放課後 恋人 両想い キス デート 胸キュン 純愛 失恋 ときめき 運命の人
        花束 約束の場所 恋心 婚約 結婚式 遠距離恋愛 幼なじみ 恋模様 甘い嘘 指輪 三角関係 溺愛
        年下彼氏 年上彼女 初デート 君に恋した
        """
    ),
    "アニメ": _words(
        """
        魔法少女 ロボット 異世界 転生 勇者 冒険 学園 戦士 変身 必殺技 宇宙海賊 精霊 妖怪 使い魔
        魔王 忍者 巨大ロボ 部活 魔導書 ヒロイン 主人公 仲間 聖剣 竜 ドラゴン 秘密基地 合体 覚醒
        最終回 劇場アニメ
        """
    ),
    "ホラー": _words(
        """
        恐怖 呪い 怨霊 心霊 廃墟 悪夢 怪談 亡霊 戦慄 絶叫 惨劇 祟り 幽霊屋敷 闇 血塗れ 禁断 生贄
        呪縛 異界 儀式 狂気 深夜 井戸 人形 影 囁き 怪異 憑依 霊能者 封印
        """
    ),
    "ミステリー": _words(
        """
        事件 探偵 推理 密室 殺人 容疑者 謎 暗号 証拠 刑事 捜査 犯人 アリバイ 失踪 迷宮 完全犯罪
        動機 名探偵 解決編 遺体 怪盗 予告状 トリック 真犯人 疑惑 時刻表 目撃者 手がかり 尋問
        未解決
        """
    ),
    "SF": _words(
        """
        宇宙 未来都市 人工知能 アンドロイド タイムマシン 時空 銀河 惑星 宇宙船 侵略 量子
        仮想現実 サイボーグ 異星人 近未来 電脳 次元 遺伝子 実験体 超光速 観測者 軌道 植民星 終末
        光線 装甲 重力 信号 第三惑星 2099年
        """
    ),
    "ドキュメンタリー": _words(
        """
        密着 記録 証言 実録 真相 取材 軌跡 現場 舞台裏 素顔 半生 挑戦者 歴史 社会 大自然 地球
        野生 戦争 職人 匠 検証 告発 100日 一年 知られざる 潜入取材 記憶 遺産 再建 時代の証人
        """
    ),
    "音楽": _words(
        """
        ライブ 音楽 歌 ステージ コンサート バンド ギター ピアノ 合唱 名曲 歌姫 旋律 リズム
        ツアー フェス 武道館 演奏 弾き語り セッション アイドル デビュー ヒット曲 交響曲 ジャズ
        ロック 歌声 楽団 音色 アンコール 卒業公演
        """
    ),
    "旅行": _words(
        """
        旅 絶景 温泉 秘境 世界一周 列車 鉄道 船旅 街歩き 名所 古都 京都 北海道 沖縄 島 港町 宿
        旅館 城下町 散策 紀行 車窓 朝市 路地裏 夕景 湖 山岳 峠 岬 ローカル線
        """
    ),
    "料理": _words(
        """
        料理 レシピ 絶品 家庭料理 和食 洋食 中華 スイーツ ケーキ パン ラーメン 寿司 弁当 鍋
        カレー 焼肉 包丁 厨房 シェフ 食卓 献立 旬 出汁 味噌 手作り 時短 おつまみ 定食 食堂
        まかない
        """
    ),
    "スポーツ": _words(
        """
        野球 サッカー 甲子園 決勝 優勝 監督 選手 試合 ゴール 記録更新 五輪 代表 練習 全国大会
        王者 逆転劇 駅伝 マラソン 柔道 相撲 横綱 ボクシング 熱戦 栄光 引退 名勝負 ラグビー
        バスケ 完全試合 一球入魂
        """
    ),
    "ファンタジー": _words(
        """
        魔法 魔女 王国 騎士 妖精 伝説 秘宝 竜騎士 魔法使い 王女 呪文 迷いの森 聖女 神殿 魔獣
        精霊王 予言 幻想 異郷 水晶 月の女神 星屑 錬金術 不思議の国 大賢者 召喚 勇者の剣 古の 龍
        エルフ
        """
    ),
    "時代劇": _words(
        """
        侍 将軍 剣客 忍び 城 江戸 浪人 殿様 奉行 大名 幕府 討ち入り 仇討ち 刀 武士道 城主 藩
        町人 岡っ引き 捕物帳 戦国 天下統一 合戦 姫君 家老 旗本 辻斬り 宿場町 御用 忠臣
        """
    ),
    "ゲーム実況": _words(
        """
        実況 プレイ 攻略 初見 ゲーム 縛りプレイ 配信 神回 最速 RTA マイクラ ボス戦 実況者 対戦
        ランク戦 ガチャ 建築 生き残り 協力プレイ 耐久 100連 ホラゲ レベル上げ 裏技 クリア
        新作ゲーム 全クリ 周回 サバイバル やり込み
        """
    ),
    "ペット": _words(
        """
        猫 子猫 犬 子犬 柴犬 うさぎ ハムスター インコ 肉球 もふもふ お散歩 癒し 動物 保護猫
        しっぽ 飼い主 ペット おやつ 寝顔 鳴き声 多頭飼い 甘えん坊 わんこ にゃんこ 金魚 小動物
        動物病院 トリミング ふわふわ 日向ぼっこ
        """
    ),
    "教育": _words(
        """
        入門 基礎 講座 授業 解説 学習 勉強法 受験 英会話 数学 歴史講義 理科 実験 資格 検定 教養
        読書術 プログラミング 微分積分 文法 初心者 はじめての 完全攻略 徹底解説 よくわかる 算数
        化学 物理 地理 問題集
        """
    ),
}

# Shared by every genre: they dilute the genre signal a little, as they do in real titles.
GENERIC_TITLE_WORDS: tuple[str, ...] = _words(
    """
    新作 完全版 特別編 第2章 総集編 傑作選 決定版 最新作 劇場版 特別版 永久保存版 未公開映像
    ディレクターズカット 前編 後編 序章 最終章 番外編 新章 リマスター 拡大版 スペシャル
    ベストセレクション 第2弾 第3弾 完結編 前日譚 特典映像付き 限定版 ザ・ムービー
    """
)

TITLE_PATTERNS: tuple[str, ...] = (
    "{a}の{b}",
    "{a}と{b}",
    "{a}{b}",
    "{a}×{b}",
    "{a}、{b}",
    "{a}！{b}",
    "「{a}」{b}",
    "{a}・{b}",
)

DESCRIPTION_TEMPLATES: tuple[str, ...] = (
    "{a}と{b}が交差する、{c}の物語。",
    "{a}をめぐる{b}の日々を描く。",
    "{a}の先に待つのは{b}か、それとも{c}か。",
    "話題の{a}が、ついに{b}で登場。",
    "{a}、{b}、そして{c}。",
    "{a}に挑む{b}の姿を追う。",
    "{a}から始まる{b}。",
    "{a}好きに贈る、{b}たっぷりの一本。",
    "誰も知らない{a}の{b}が明かされる。",
    "{a}の魅力を{b}とともにお届けします。",
    "{a}を舞台に、{b}が動き出す。",
    "見どころは{a}と{b}。",
    "{a}の真実とは。",
    "{a}で出会った{b}と{c}。",
)

SERIES_EPISODE_FORMATS: tuple[str, ...] = (
    "第{n}話", "Vol.{n}", "{n}", "パート{n}", "その{n}", "#{n}",
)  # fmt: skip

FAMILY_NAMES: tuple[str, ...] = _words(
    """
    佐藤 鈴木 高橋 田中 伊藤 渡辺 山本 中村 小林 加藤 吉田 山田 佐々木 山口 松本 井上 木村 林
    斎藤 清水 山崎 森 池田 橋本 阿部 石川 山下 中島 石井 小川 前田 岡田 長谷川 藤田 後藤 近藤
    村上 遠藤 青木 坂本 福田 太田 西村 藤井 金子 岡本 藤原 中野 三浦 原田 中川 松田 竹内 小野
    田村 中山 和田 石田 森田 上田 原 内田 柴田 酒井 宮崎 横山 高木 安藤 宮本 大野
    """
)
# A given name is a head and a tail character: 美 + 香, 翔 + 太, ...
GIVEN_NAME_HEADS: tuple[str, ...] = tuple(
    "美結陽愛花彩真優莉沙千奈恵明翔大健拓亮颯蓮悠湊陸春夏秋冬桜凛"
)
GIVEN_NAME_TAILS: tuple[str, ...] = tuple(
    "子美香菜奈衣希花音月太斗人介也樹輝真那里央紀帆乃佳絵史平志葉"
)

MAKER_HEADS: tuple[str, ...] = _words(
    """
    サクラ ムーン スター ブルー レッド ゴールド シルバー サニー ドリーム ファースト ネオ
    ミラクル ルナ ソラ ハナ ユメ ヒカリ カゼ ミライ アオ クリア グリーン ホワイト ブラック
    ピース ハッピー ノース サウス イースト ウエスト オーシャン フォレスト リバー スカイ ステラ
    ノヴァ アトラス オーロラ ジェム ルビー
    """
)
# The empty middle: some makers have a two-part name.
MAKER_MIDDLES: tuple[str, ...] = (
    "",
    *_words("ライト ハート ゲート ライン ウェーブ ポイント ライフ フィールド"),
)
MAKER_TAILS: tuple[str, ...] = _words(
    """
    映像 プロダクション ピクチャーズ スタジオ フィルム エンタテインメント メディア ワークス 企画
    制作所 シネマ ムービー
    """
)
LABEL_SUFFIXES: tuple[str, ...] = _words(
    """
    レーベル プレミアム ネクスト クラシック セレクト プラス ライト ゼロ
    """
)

PERSON_NAME_CAPACITY = len(FAMILY_NAMES) * len(GIVEN_NAME_HEADS) * len(GIVEN_NAME_TAILS)
MAKER_NAME_CAPACITY = len(MAKER_HEADS) * len(MAKER_MIDDLES) * len(MAKER_TAILS)


def _pick(words: Sequence[str], u: float) -> str:
    return words[int(u * len(words))]


def person_name(code: int) -> str:
    """The performer name numbered `code`: unique for 0 <= code < PERSON_NAME_CAPACITY."""
    if code >= PERSON_NAME_CAPACITY:
        return f"出演者{code - PERSON_NAME_CAPACITY + 1}"
    code, tail = divmod(code, len(GIVEN_NAME_TAILS))
    family, head = divmod(code, len(GIVEN_NAME_HEADS))
    return FAMILY_NAMES[family] + GIVEN_NAME_HEADS[head] + GIVEN_NAME_TAILS[tail]


def maker_name(code: int) -> str:
    """The maker name numbered `code`: unique for 0 <= code < MAKER_NAME_CAPACITY."""
    if code >= MAKER_NAME_CAPACITY:
        return f"メーカー{code - MAKER_NAME_CAPACITY + 1}"
    code, tail = divmod(code, len(MAKER_TAILS))
    head, middle = divmod(code, len(MAKER_MIDDLES))
    return MAKER_HEADS[head] + MAKER_MIDDLES[middle] + MAKER_TAILS[tail]


def compose_title(primary: Sequence[str], secondary: Sequence[str], u: Sequence[float]) -> str:
    """A title from two words, mostly of the primary genre, sometimes with a generic word.

    `primary` / `secondary`: the words of the video's first genre and of its other genres (the
    generic words when it has one genre); `u`: 6 uniform numbers in [0, 1).
    """
    a = _pick(primary, u[0])
    b = _pick(secondary if u[1] < 0.35 else primary, u[2])
    if b == a:
        b = _pick(GENERIC_TITLE_WORDS, u[2])
    title = _pick(TITLE_PATTERNS, u[3]).format(a=a, b=b)
    generic = _pick_other(GENERIC_TITLE_WORDS, u[5], (a, b))
    if u[4] < 0.12:
        return f"【{generic}】{title}"
    if u[4] < 0.24:
        return f"{title}～{generic}～"
    if u[4] < 0.32:
        return title + generic
    return title


def compose_series_stem(words: Sequence[str], u: Sequence[float]) -> str:
    """The name of a maker's series from its specialty genre's words; `u`: 3 uniforms."""
    a, b = _pick(words, u[0]), _pick(words, u[1])
    if a == b:
        return a + "物語"
    return a + ("の" if u[2] < 0.5 else "") + b


def compose_series_title(
    stem: str, episode_format: str, episode: int, primary: Sequence[str], u: Sequence[float]
) -> str:
    """A series episode's title: the series stem, the episode marker, sometimes a subtitle."""
    title = stem + episode_format.format(n=episode)
    return f"{title}～{_pick(primary, u[0])}～" if u[4] < 0.3 else title


def compose_description(
    primary: Sequence[str], secondary: Sequence[str], u: Sequence[float]
) -> str:
    """1-3 short sentences from templates filled with genre words; `u`: 13 uniforms."""
    parts = []
    for s in range(1 + int(u[0] * 3)):
        v = u[1 + 4 * s : 5 + 4 * s]
        a = _pick(primary, v[2])
        b = _pick_other(secondary if v[1] < 0.3 else primary, v[3], (a,))
        c = _pick_other(primary, (v[2] + v[3]) % 1.0, (a, b))
        parts.append(_pick(DESCRIPTION_TEMPLATES, v[0]).format(a=a, b=b, c=c))
    return "".join(parts)


def _pick_other(words: Sequence[str], u: float, taken: tuple[str, ...]) -> str:
    """Like `_pick`, but the next word along when the picked one is already used."""
    start = int(u * len(words))
    for offset in range(len(words)):
        word = words[(start + offset) % len(words)]
        if word not in taken:
            return word
    return words[start]
