"""Random but internally consistent identities for synthetic ID cards.

Everything is drawn from a ``numpy.random.Generator`` so that a seed fully determines
the identity.  The region codes come from the engine's own table
(``worker/recognition/data/region_codes.tsv``) so that every generated number passes
the engine's region check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "ETHNICITIES",
    "Identity",
    "check_digit",
    "random_identity",
    "region_table",
    "validity_years",
]

DEFAULT_TODAY = date(2026, 11, 30)

# The 56 officially recognised ethnic groups, without the trailing 族.
ETHNICITIES: tuple[str, ...] = (
    "汉", "蒙古", "回", "藏", "维吾尔", "苗", "彝", "壮", "布依", "朝鲜",
    "满", "侗", "瑶", "白", "土家", "哈尼", "哈萨克", "傣", "黎", "傈僳",
    "佤", "畲", "高山", "拉祜", "水", "东乡", "纳西", "景颇", "柯尔克孜", "土",
    "达斡尔", "仫佬", "羌", "布朗", "撒拉", "毛南", "仡佬", "锡伯", "阿昌", "普米",
    "塔吉克", "怒", "乌孜别克", "俄罗斯", "鄂温克", "德昂", "保安", "裕固", "京", "塔塔尔",
    "独龙", "鄂伦春", "赫哲", "门巴", "珞巴", "基诺",
)  # fmt: skip

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶"
    "程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾"
    "毛郝龚邵万钱严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关"
    "兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻"
    "祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿"
    "桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝"
)
COMPOUND_SURNAMES = (
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "令狐",
    "夏侯", "长孙", "宇文", "司徒", "端木", "西门", "南宫", "独孤", "轩辕", "呼延",
)  # fmt: skip
_GIVEN_RAW = (
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超霞平刚桂兰玲华飞红建文辉鑫宇浩然子轩梓涵欣怡一诺"
    "雨桐佳琪思远博俊婷慧颖雪梅海燕志国庆德福春秋冬夏天山川江河湖波宏成功立新永金银玉宝珠晶"
    "莹瑞祥吉丰凯旋振兴家乐安康健美嘉琳琦瑶萱璐珊瑾琛瑜璇昊昕睿哲泽宸皓烨煜晟晖炜旭昱晗曦宁"
    "悦馨蕊芸茜菲蓉薇莉萍鹏鸿翔鹤龙凤麟骏驰腾跃东南西北中正直义礼智信仁忠孝勤俭恒毅坚卫兵民"
    "生荣富贵长青松柏竹菊莲荷桃杏叶森彬楠杉柳云虹彩雯露霜冰清洁亮耀灿晓晴朗月星辰阳娇婉娴淑"
    "贤惠达通航帆舟程路遥心意诚源念祖承宗继业斌峰岩石磊鑫淼焱垚涵润泓澜瀚沐霖铭锐钧铎锋钰钦"
    "晨曼倩婕妍姝媛嫣婧娅妮琼瑛琪珍璐岚嵘崇峻巍彤彦宣宜容宸寒尧舜禹汉唐宋元清秀丹青墨书诗"
    "雅韵乐歌舞琴笛笙萌芽苗蔚茂苑莎菁萱蓓蕾薇芷若兮希望怀远航帆昌盛旺隆泰恩惠佑祐福禄寿喜"
    "庆贺宏图展鹏翼翰林逸飞扬帆凡尘梦晓涵宁馨可欣佳怡雨萱一鸣子豪俊熙浩宇博涛嘉懿"
)
GIVEN_CHARS: tuple[str, ...] = tuple(dict.fromkeys(_GIVEN_RAW))

# Transliterated given names used with a middle dot ("本名·父名"), by ethnicity.
_DOT_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # ethnicity: (male names, female names); the father's name is always male.
    "维吾尔": (
        ("买买提", "艾力", "阿不都拉", "艾合买提", "吐尔逊", "玉素甫", "依明", "艾尼瓦尔",
         "热合曼", "阿迪力", "麦麦提", "吾买尔", "阿布来提", "努尔艾力", "伊力哈木", "库尔班",
         "塔依尔", "牙生", "阿不力孜", "赛买提"),
        ("古丽娜尔", "热依拉", "阿依古丽", "帕提古丽", "迪丽努尔", "如克亚", "买热木古丽",
         "祖丽菲亚", "阿依努尔", "米热古丽", "热娜", "努尔古丽", "萨依拉", "海丽倩"),
    ),
    "哈萨克": (
        ("努尔兰", "叶尔兰", "别克", "哈力木", "叶尔江", "达吾列提", "阿斯哈尔", "加恩斯",
         "叶尔波力", "马合沙提", "巴合提", "吐尔洪"),
        ("阿依达娜", "加娜尔", "江阿古丽", "沙吾列", "古丽巴哈", "阿依别克", "玛合巴丽"),
    ),
    "柯尔克孜": (
        ("吐尔逊", "阿不都热合曼", "托合提", "玛纳斯", "苏来曼"),
        ("古丽加娜提", "阿依提拉", "布茹丽"),
    ),
    "乌孜别克": (("阿不力米提", "库尔班", "乌斯曼"), ("古丽娜", "扎依娜甫")),
    "塔吉克": (("阿米尔", "沙迪克", "阿里甫"), ("古丽沙", "热依汗")),
    "塔塔尔": (("卡米勒", "哈力克"), ("萨比拉", "努尔加米拉")),
}
_DOT_WEIGHTS = {"维吾尔": 0.7, "哈萨克": 0.15, "柯尔克孜": 0.05, "乌孜别克": 0.04,
                "塔吉克": 0.03, "塔塔尔": 0.03}  # fmt: skip
_TIBETAN_PARTS = ("扎西", "次仁", "多吉", "卓玛", "拉姆", "格桑", "旦增", "央金", "尼玛", "达瓦",
                  "平措", "德吉", "索朗", "益西", "曲珍", "边巴", "洛桑", "普布")  # fmt: skip
_MONGOL_NAMES = ("巴特尔", "其其格", "乌兰", "额尔敦", "苏和", "斯琴", "图雅", "宝音", "那仁",
                 "敖日格乐", "朝鲁", "萨仁", "阿拉坦", "布和")  # fmt: skip

# Street / village building blocks for the free part of the address.
_ROAD = (
    "人民", "解放", "建设", "胜利", "幸福", "和平", "中山", "友谊", "光明", "团结", "新华", "文化",
    "朝阳", "长江", "黄河", "青年", "东风", "红旗", "前进", "育才", "学府", "工业", "花园", "滨江",
    "延安", "迎宾", "建国", "民主", "复兴", "兴华", "振兴", "金桥", "开发", "科技", "高新", "世纪",
    "锦绣", "丰收", "春晖", "望江", "湖滨", "桂花", "梧桐", "枫林", "银杏", "紫荆", "海棠", "府前",
    "沿河", "环城", "车站", "北京", "南京", "天山", "昆仑", "太行", "泰山", "黄山", "珠江",
    "松花江",
)  # fmt: skip
_ROAD_SUFFIX = ("路", "路", "路", "街", "街", "大道", "大街", "东路", "西路", "南路", "北路",
                "中路", "巷", "一路", "二路")  # fmt: skip
_COMMUNITY = ("阳光", "翠苑", "锦华", "金色", "碧水", "怡和", "华府", "绿城", "书香", "丽景",
              "康乐", "安居", "富民", "明珠", "龙湖", "御景", "世纪", "东方", "滨江", "紫金",
              "香榭", "春华", "秋实", "馨园", "星河", "枫丹", "雅居", "幸福里")  # fmt: skip
_COMMUNITY_SUFFIX = ("小区", "花园", "家园", "苑", "新村", "公寓", "嘉园", "城", "佳苑", "名邸")
_PLACE_CHARS = ("东西南北上下大小新老石柳杨李王张马黄白青红金河桥山岭沟坡庄店集湾塘坪营堡寨"
                "家铺口屯园林沙水田高龙凤双三五八")
_VILLAGE_SUFFIX = ("庄村", "屯村", "沟村", "湾村", "营村", "家村", "寨村", "家庄村", "店村", "河村")

_PLACEHOLDER_NAMES = {"市辖区", "县", "市", "林区"}


@dataclass
class Identity:
    """One citizen as printed on the card (front and back)."""

    name: str
    sex: str  # '男' / '女'
    ethnicity: str  # without 族
    birth: date
    address: str
    number: str
    issue: str
    valid_from: date
    valid_to: date | str  # a date or '长期'

    def to_vendor_fields(self, side: str) -> dict[str, str]:
        """The fields the recognition API is expected to return for ``side``."""
        if side == "front":
            return {
                "name": self.name,
                "sex": self.sex,
                "ethnicity": self.ethnicity,
                "birth": self.birth.isoformat(),
                "address": self.address,
                "number": self.number,
            }
        if side == "back":
            vt = self.valid_to
            valid_to = vt if isinstance(vt, str) else vt.isoformat()
            return {
                "issue": self.issue,
                "valid_from": self.valid_from.isoformat(),
                "valid_to": valid_to,
            }
        raise ValueError(f"side must be 'front' or 'back', not {side!r}")


# --------------------------------------------------------------------------- regions


def _region_path() -> Path:
    # An override lets the package run outside the repository layout.
    env = os.environ.get("SYNTHCARD_REGION_CODES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "worker" / "recognition" / "data" / (
        "region_codes.tsv"
    )


@lru_cache(maxsize=4)
def _load_regions(path: str) -> dict[str, str]:
    table: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\r\n")
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) >= 2 and len(parts[0]) == 6 and parts[0].isdigit():
                table[parts[0]] = parts[1].strip()
    if not table:
        raise RuntimeError(f"no region codes in {path}")
    return table


def region_table() -> dict[str, str]:
    """``code -> name`` for every row of the engine's region table."""
    return _load_regions(str(_region_path()))


def _is_placeholder(name: str | None) -> bool:
    return name is None or name in _PLACEHOLDER_NAMES or "直辖" in name


@lru_cache(maxsize=4)
def _county_choices(path: str) -> tuple[tuple[str, str, str], ...]:
    """(code, address prefix, issuing authority) for every usable county-level code."""
    table = _load_regions(path)
    out: list[tuple[str, str, str]] = []
    for code, county in table.items():
        if code.endswith("00") or _is_placeholder(county):
            continue
        # Taiwan / Hong Kong / Macau residents do not hold this card.
        if code[:2] in ("71", "81", "82"):
            continue
        province = table.get(code[:2] + "0000")
        if province is None:
            continue
        city = table.get(code[:4] + "00")
        municipality = code[:2] in ("11", "12", "31", "50")
        if _is_placeholder(city):
            # Only municipalities and province-administered counties lack a real city.
            if not (municipality or code[2:4] == "90"):
                continue
            city = ""
        prefix = province + (city or "") + county
        if county.endswith("区") and len(county) >= 3:
            seat = city or province
            issue = f"{seat}公安局{county[:-1]}分局"
        else:
            issue = f"{county}公安局"
        if len(issue) > 15 or len(prefix) > 30:
            continue  # would not fit the card's single issue line
        out.append((code, prefix, issue))
    if not out:
        raise RuntimeError(f"no usable county codes in {path}")
    return tuple(sorted(out))


# --------------------------------------------------------------------------- numbers

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def check_digit(first17: str) -> str:
    """GB 11643 ISO 7064 MOD 11-2 check character for the first 17 digits."""
    total = sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True))
    return "10X98765432"[total % 11]


def validity_years(birth: date, issued: date) -> int | None:
    """Years of validity for a card issued at ``issued``; ``None`` means 长期."""
    age = issued.year - birth.year - ((issued.month, issued.day) < (birth.month, birth.day))
    if age < 16:
        return 5
    if age <= 25:
        return 10
    if age <= 45:
        return 20
    return None


# --------------------------------------------------------------------------- sampling


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _random_date(rng: np.random.Generator, lo: date, hi: date) -> date:
    return lo + timedelta(days=int(rng.integers(0, (hi - lo).days + 1)))


def _given(rng: np.random.Generator, n: int) -> str:
    return "".join(_pick(rng, GIVEN_CHARS) for _ in range(n))


def _name_and_ethnicity(rng: np.random.Generator, sex: str) -> tuple[str, str]:
    male = sex == "男"
    r = rng.random()
    if r < 0.05:
        groups = list(_DOT_WEIGHTS)
        eth = groups[int(rng.choice(len(groups), p=list(_DOT_WEIGHTS.values())))]
        males, females = _DOT_NAMES[eth]
        for _ in range(20):
            name = _pick(rng, males if male else females) + "·" + _pick(rng, males)
            if len(name) <= 10:  # longer names would run into the portrait
                break
        return name, eth
    # ~85 % Han overall; the remaining groups uniformly.
    if rng.random() < 0.85 / 0.95:
        eth = "汉"
    else:
        eth = _pick(rng, ETHNICITIES[1:])
    if eth == "藏" and rng.random() < 0.7:
        return _pick(rng, _TIBETAN_PARTS) + _pick(rng, _TIBETAN_PARTS), eth
    if eth == "蒙古" and rng.random() < 0.4:
        return _pick(rng, _MONGOL_NAMES), eth
    r = rng.random()
    if r < 0.04:
        surname = _pick(rng, COMPOUND_SURNAMES)
        return surname + _given(rng, int(rng.integers(1, 3))), eth
    surname = _pick(rng, SURNAMES)
    if r < 0.07:  # a few 4-character Han names (e.g. both parents' surnames)
        return surname + _pick(rng, SURNAMES) + _given(rng, 2), eth
    return surname + _given(rng, 1 if rng.random() < 0.3 else 2), eth


def _num(rng: np.random.Generator, lo: int, hi: int) -> str:
    return str(int(rng.integers(lo, hi + 1)))


def _street_candidates(rng: np.random.Generator) -> list[str]:
    """Street/village parts of increasing length; the caller picks one to hit a target."""
    road = _pick(rng, _ROAD) + _pick(rng, _ROAD_SUFFIX)
    community = _pick(rng, _COMMUNITY) + _pick(rng, _COMMUNITY_SUFFIX)
    place = "".join(_pick(rng, _PLACE_CHARS) for _ in range(2))
    if rng.random() < 0.6:
        village = "".join(_pick(rng, _PLACE_CHARS) for _ in range(2)) + "村"
    else:
        village = _pick(rng, _PLACE_CHARS) + _pick(rng, _VILLAGE_SUFFIX)
    n_house = _num(rng, 1, 999)
    bld, unit = _num(rng, 1, 30), _num(rng, 1, 6)
    room = _num(rng, 1, 33) + f"{int(rng.integers(1, 5)):02d}"
    cands: list[str] = []
    if rng.random() < 0.3:  # rural
        town = place + _pick(rng, ("镇", "镇", "乡"))
        group = _num(rng, 1, 12)
        cands += [
            f"{village}{n_house}号",
            f"{town}{village}{n_house}号",
            f"{town}{village}{group}组{n_house}号",
            f"{town}{village}{group}组{n_house}号附{_num(rng, 1, 9)}号",
            f"{town}{place}街{n_house}号",
            f"{town}{village}第{group}村民小组{n_house}号",
        ]
    else:
        cands += [
            f"{road}{n_house}号",
            f"{road}{n_house}号{bld}栋",
            f"{road}{n_house}号{room}室",
            f"{road}{n_house}号{bld}栋{unit}单元{room}室",
            f"{road}{n_house}号{community}{bld}号楼{unit}单元{room}号",
            f"{road}{n_house}弄{bld}号{room}室",
            f"{road}{n_house}号院{bld}号楼{unit}门{room}号",
            f"{community}{bld}栋{unit}单元{room}室",
            f"{road}{n_house}号{community}{bld}幢{unit}单元{room}室",
        ]
    return sorted(set(cands), key=lambda s: (len(s), s))


def _address(rng: np.random.Generator, prefix: str) -> str:
    target = int(rng.integers(11, 41))
    cands = [prefix + s for s in _street_candidates(rng)]
    ok = [a for a in cands if 11 <= len(a) <= 40] or cands[:1]
    # The longest candidate not longer than the target, else the shortest one.
    fitting = [a for a in ok if len(a) <= target]
    return fitting[-1] if fitting else ok[0]


def random_identity(rng: np.random.Generator, today: date = DEFAULT_TODAY) -> Identity:
    """A random, self-consistent identity (valid number, region, validity period)."""
    choices = _county_choices(str(_region_path()))
    code, prefix, issue = choices[int(rng.integers(len(choices)))]

    sex = "男" if rng.random() < 0.5 else "女"
    name, eth = _name_and_ethnicity(rng, sex)
    # Born at least ~3 months before "today" so that a card can have been issued.
    birth = _random_date(rng, date(1940, 1, 1), min(date(2020, 12, 31), today - timedelta(90)))

    # Sequence: 3 digits, the last one odd for men and even for women; never 000.
    seq = int(rng.integers(0, 100)) * 10 + int(_pick(rng, (1, 3, 5, 7, 9) if sex == "男"
                                                     else (0, 2, 4, 6, 8)))
    if seq == 0:
        seq = 10
    first17 = f"{code}{birth:%Y%m%d}{seq:03d}"
    number = first17 + check_digit(first17)

    # Second-generation cards exist since 2004; mostly issued within the last 20 years.
    lo = max(birth + timedelta(days=30), date(2004, 1, 1), date(today.year - 20, today.month, 1))
    if lo >= today:
        lo = birth + timedelta(days=1)
    want_valid = rng.random() < 0.8  # the rest may be expired
    valid_from = valid_to = None
    for _ in range(16):
        valid_from = _random_date(rng, lo, today - timedelta(days=1))
        if valid_from.month == 2 and valid_from.day == 29:
            valid_from = valid_from.replace(day=28)  # keep "same day +N years" well defined
        years = validity_years(birth, valid_from)
        valid_to = "长期" if years is None else valid_from.replace(year=valid_from.year + years)
        if not want_valid or valid_to == "长期" or valid_to >= today:
            break
    assert valid_from is not None and valid_to is not None

    return Identity(
        name=name,
        sex=sex,
        ethnicity=eth,
        birth=birth,
        address=_address(rng, prefix),
        number=number,
        issue=issue,
        valid_from=valid_from,
        valid_to=valid_to,
    )
