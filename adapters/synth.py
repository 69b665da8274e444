"""Synthetic credit data for the sample departments, deterministic from a seed.

``generate(out_dir, seed=1, subjects=10_000)`` writes one SQLite file per
sample department (``market.sqlite``, ``tax.sqlite``...; schemas from
``adapters/samples/*.sql``) and ``subjects.json``, a handful of interesting
subjects for demos and tests.

Everything is synthetic but shaped like the real thing:

* unified social credit codes follow GB 32100-2015 (registration authority
  ``9``, category ``1``, a real administrative division code, a GB 11714
  organisation code with its own check character, the mod-31 check character);
* resident identity numbers follow GB 11643-1999 (a real address code, a real
  birth date, a sequence whose parity gives the sex, the mod-11 check);
* names are common surnames and given names; company names are
  地名 + 字号 + 行业 + 有限公司;
* negative records end at realistic dates around :data:`REFERENCE_DATE`:
  some more than five years before it (Art. 16: must not be returned), some
  exactly five years before (the boundary), some still ongoing, and a few are
  disputed (Art. 25).

The same seed gives the same databases, row for row: the generator draws only
from one ``random.Random(seed)`` and never iterates over a set.

Why one module (some 1,200 lines): every table of every sample department is drawn from
the one seeded stream in one fixed order, and that order is what makes a seed give the same
databases everywhere (and the showcase subjects the demo and the tests name); split over
modules, the order would hang on the call order between them. Most of the length is the
record builders of the sample tables, one method each.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gateway.identifiers import resident_id_check_char, uscc_check_char

__all__ = [
    "DEPARTMENTS",
    "REFERENCE_DATE",
    "Summary",
    "generate",
    "sample_mapping",
    "sample_schema",
    "years_before",
]

#: The sample departments, each with ``samples/<id>.toml`` and ``<id>.sql``.
DEPARTMENTS: Final = ("market", "tax", "court", "pbccrc", "food_drug", "agriculture", "hrss")

#: "Today" for the synthetic data: ages and the five-year boundary are
#: relative to it, so tests that fix the gateway's clock here are stable.
REFERENCE_DATE: Final = dt.date(2026, 11, 1)

_SAMPLES: Final = Path(__file__).resolve().parent / "samples"


def sample_mapping(department: str) -> Path:
    """The packaged mapping file of a sample department."""
    return _SAMPLES / f"{department}.toml"


def sample_schema(department: str) -> Path:
    """The packaged schema SQL of a sample department."""
    return _SAMPLES / f"{department}.sql"


def years_before(day: dt.date, years: int) -> dt.date:
    """The same calendar day ``years`` earlier (29 February becomes the 28th)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


# --- reference data ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Region:
    code: str  # GB/T 2260 administrative division code
    place: str  # full name, for addresses
    short: str  # 地名 used in company names
    office: str  # prefix of local authorities' names
    rural: bool


_REGIONS: Final = (
    _Region("350200", "福建省厦门市", "厦门", "厦门市", False),
    _Region("350203", "福建省厦门市思明区", "厦门", "厦门市思明区", False),
    _Region("350206", "福建省厦门市湖里区", "厦门", "厦门市湖里区", False),
    _Region("350211", "福建省厦门市集美区", "厦门", "厦门市集美区", False),
    _Region("110105", "北京市朝阳区", "北京", "北京市朝阳区", False),
    _Region("110108", "北京市海淀区", "北京", "北京市海淀区", False),
    _Region("310115", "上海市浦东新区", "上海", "上海市浦东新区", False),
    _Region("440106", "广东省广州市天河区", "广州", "广州市天河区", False),
    _Region("440305", "广东省深圳市南山区", "深圳", "深圳市南山区", False),
    _Region("330106", "浙江省杭州市西湖区", "杭州", "杭州市西湖区", False),
    _Region("320102", "江苏省南京市玄武区", "南京", "南京市玄武区", False),
    _Region("420106", "湖北省武汉市武昌区", "武汉", "武汉市武昌区", False),
    _Region("510107", "四川省成都市武侯区", "成都", "成都市武侯区", False),
    _Region("360426", "江西省九江市德安县", "德安", "德安县", True),
    _Region("360424", "江西省九江市修水县", "修水", "修水县", True),
    _Region("340524", "安徽省马鞍山市", "马鞍山", "马鞍山市", True),
    _Region("350121", "福建省福州市闽侯县", "闽侯", "闽侯县", True),
    _Region("350322", "福建省莆田市仙游县", "仙游", "仙游县", True),
    _Region("411326", "河南省南阳市淅川县", "淅川", "淅川县", True),
)
# Xiamen is the sample region: most subjects are registered there.
_REGION_WEIGHTS: Final = (10, 8, 8, 6, 3, 3, 3, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3)
# Persons' address codes are county-level; 350200 is a prefecture code only
# enterprises registered at city level carry.
_PERSON_REGIONS: Final = tuple(r for r in _REGIONS if r.code != "350200")

_SURNAMES: Final = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严"
)
_COMPOUND_SURNAMES: Final = ("欧阳", "司马", "上官", "诸葛")
_GIVEN_MALE: Final = "伟强磊军洋勇杰涛明超刚平辉鹏华飞鑫波斌宇浩凯健俊帆建国志文博海峰亮"
_GIVEN_FEMALE: Final = "芳娜敏静丽艳娟霞燕玲桂英秀兰红梅琳雪婷慧莉晶颖倩萍璐洁佳欣怡"
_ZIHAO_1: Final = "鑫恒华金盛宏泰信瑞德中永嘉兴隆丰源博众新天安和聚荣"
_ZIHAO_2: Final = "达源通盛发昌晟康泽宇辉翔锦润立凯诚禾航铭腾汇鼎"


@dataclass(frozen=True, slots=True)
class _Industry:
    name: str  # 行业 as it appears in the company name
    scope: str  # 经营范围
    licence: str | None  # a food/drug licence type, if the trade needs one


_INDUSTRIES: Final = (
    _Industry("科技", "软件开发；信息技术咨询服务；数据处理服务", None),
    _Industry("贸易", "日用百货销售；五金产品批发；货物进出口", None),
    _Industry("建筑工程", "房屋建筑工程施工；市政公用工程施工；建筑劳务分包", None),
    _Industry("物流", "道路货物运输；仓储服务；国内货运代理", None),
    _Industry("电子", "电子元器件制造；电子产品销售", None),
    _Industry("服装", "服装制造；服饰批发", None),
    _Industry("机械设备", "通用设备制造；机械设备租赁", None),
    _Industry("房地产开发", "房地产开发经营；物业管理", None),
    _Industry("食品", "食品生产；食品经营（销售预包装食品）", "食品生产许可证"),
    _Industry("餐饮管理", "餐饮服务；餐饮管理；食品经营", "食品经营许可证"),
    _Industry("医药", "药品批发；医疗器械经营", "药品经营许可证"),
    _Industry("大药房", "药品零售；保健食品销售", "药品经营许可证"),
    _Industry("农业发展", "农作物种植；农产品初加工；农业技术推广", None),
)
_INDUSTRY_WEIGHTS: Final = (10, 12, 8, 6, 5, 4, 5, 3, 5, 6, 3, 3, 5)

_BANKS: Final = (
    "中国工商银行",
    "中国农业银行",
    "中国银行",
    "中国建设银行",
    "交通银行",
    "兴业银行",
    "招商银行",
    "厦门银行",
    "农村商业银行",
    "邮政储蓄银行",
)
_VILLAGES: Final = ("东山", "石门", "桥头", "新塘", "上湾", "下林", "坪上", "黄田", "大坑", "溪口")


@dataclass(slots=True)
class _Enterprise:
    uscc: str
    name: str
    region: _Region
    industry: _Industry
    established_on: dt.date


@dataclass(slots=True)
class _Person:
    id_number: str
    name: str
    region: _Region
    born: dt.date


@dataclass(frozen=True, slots=True)
class Summary:
    """What :func:`generate` wrote."""

    out_dir: Path
    enterprises: int
    persons: int
    #: department -> number of rows written
    rows: dict[str, int]
    subjects_file: Path


@dataclass(slots=True)
class _Notable:
    """A showcase subject, for subjects.json."""

    key: str
    type: str
    id: str
    name: str
    description: str
    known_by: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)


class _Generator:
    """Holds the random source, the identifiers issued so far, and the rows."""

    def __init__(self, seed: int, reference: dt.date) -> None:
        self.rng = random.Random(seed)
        self.today = reference
        self.boundary = years_before(reference, 5)
        # Uniqueness only: these sets are looked into, never iterated.
        self._issued: set[str] = set()
        self._names: set[str] = set()
        self.rows: dict[str, dict[str, list[tuple[Any, ...]]]] = {d: {} for d in DEPARTMENTS}
        self._next_id: dict[tuple[str, str], int] = {}

    # --- primitives ---------------------------------------------------------------

    def day(self, start: dt.date, end: dt.date) -> dt.date:
        return start + dt.timedelta(days=self.rng.randrange((end - start).days + 1))

    def days_ago(self, lo: int, hi: int) -> dt.date:
        return self.today - dt.timedelta(days=self.rng.randint(lo, hi))

    def fen(self, lo_yuan: int, hi_yuan: int) -> int:
        # Whole yuan, as amounts are mostly recorded; always integer fen.
        return self.rng.randint(lo_yuan, hi_yuan) * 100

    def region(self) -> _Region:
        return self.rng.choices(_REGIONS, weights=_REGION_WEIGHTS)[0]

    def add(self, dept: str, table: str, row: tuple[Any, ...]) -> None:
        self.rows[dept].setdefault(table, []).append(row)

    def new_id(self, dept: str, table: str) -> int:
        key = (dept, table)
        self._next_id[key] = self._next_id.get(key, 0) + 1
        return self._next_id[key]

    def disputed(self) -> int:
        return 1 if self.rng.random() < 0.04 else 0

    # --- identifiers and names -------------------------------------------------

    def uscc(self, region: _Region) -> str:
        alnum = "0123456789ABCDEFGHJKLMNPQRTUWXY"
        while True:
            if self.rng.random() < 0.7:
                # Codes issued since 2015 carry an organisation code starting "MA".
                org8 = "MA" + "".join(self.rng.choice(alnum) for _ in range(6))
            else:
                org8 = "".join(self.rng.choice("0123456789") for _ in range(8))
            body = "91" + region.code + org8 + _org_check_char(org8)
            code = body + uscc_check_char(body)
            if code not in self._issued:
                self._issued.add(code)
                return code

    def resident_id(self, region: _Region, born: dt.date, male: bool) -> str:
        while True:
            seq = self.rng.randrange(0, 500) * 2 + (1 if male else 0)  # odd = male
            body = f"{region.code}{born:%Y%m%d}{seq:03d}"
            number = body + resident_id_check_char(body)
            if number not in self._issued:
                self._issued.add(number)
                return number

    def person_name(self, male: bool) -> str:
        rng = self.rng
        surname = rng.choice(_COMPOUND_SURNAMES) if rng.random() < 0.02 else rng.choice(_SURNAMES)
        chars = _GIVEN_MALE if male else _GIVEN_FEMALE
        given = rng.choice(chars) + (rng.choice(chars) if rng.random() < 0.7 else "")
        return surname + given

    def company_name(self, region: _Region, industry: _Industry) -> str:
        while True:
            zihao = self.rng.choice(_ZIHAO_1) + self.rng.choice(_ZIHAO_2)
            name = f"{region.short}{zihao}{industry.name}有限公司"
            if name not in self._names:
                self._names.add(name)
                return name

    def enterprise(
        self, region: _Region | None = None, industry: _Industry | None = None
    ) -> _Enterprise:
        region = region or self.region()
        industry = industry or self.rng.choices(_INDUSTRIES, weights=_INDUSTRY_WEIGHTS)[0]
        return _Enterprise(
            uscc=self.uscc(region),
            name=self.company_name(region, industry),
            region=region,
            industry=industry,
            established_on=self.day(dt.date(1995, 1, 1), self.today - dt.timedelta(days=90)),
        )

    def person(self, region: _Region | None = None) -> _Person:
        region = region or self.rng.choices(_PERSON_REGIONS, weights=_REGION_WEIGHTS[1:])[0]
        # Adults only: born 1950 up to 18 years before the reference date.
        born = self.day(dt.date(1950, 1, 1), years_before(self.today, 18))
        male = self.rng.random() < 0.5
        return _Person(
            id_number=self.resident_id(region, born, male),
            name=self.person_name(male),
            region=region,
            born=born,
        )

    def negative_end(self, start: dt.date, ongoing: float = 0.2) -> dt.date | None:
        """When a negative event that began on ``start`` ended (None: ongoing).

        Starts spread over twelve years, so a good share ended more than five
        years before the reference date and must age out.
        """
        if self.rng.random() < ongoing:
            return None
        end = start + dt.timedelta(days=self.rng.randint(15, 720))
        return end if end < self.today else None


def _org_check_char(org8: str) -> str:
    """GB 11714 check character of an 8-character organisation code body."""
    weights = (3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(
        (int(c) if c.isdigit() else ord(c) - 55) * w for c, w in zip(org8, weights, strict=True)
    )
    check = 11 - total % 11
    return {10: "X", 11: "0"}.get(check, str(check))


_PROVINCE_ABBR: Final = {
    "11": "京", "31": "沪", "32": "苏", "33": "浙", "34": "皖", "35": "闽",
    "36": "赣", "41": "豫", "42": "鄂", "44": "粤", "51": "川",
}  # fmt: skip


def _court_code(region: _Region) -> str:
    """The 案号 court prefix, e.g. 闽0203 for a Siming district court."""
    return f"{_PROVINCE_ABBR[region.code[:2]]}{region.code[2:6]}"


def _iso(day: dt.date | None) -> str | None:
    return None if day is None else day.isoformat()


# --- department records ------------------------------------------------------------


class _Records:
    """Writers of one kind of record each; ``end``/``disputed`` overrides let
    the showcase subjects pin exact dates and flags."""

    def __init__(self, g: _Generator) -> None:
        self.g = g

    # market
    def registration(self, e: _Enterprise, legal_rep: str, *, disputed: int = 0) -> None:
        g = self.g
        status = g.rng.choices(("存续", "在业", "吊销", "注销"), weights=(80, 10, 6, 4))[0]
        capital = g.rng.choice((10, 50, 100, 200, 300, 500, 1000, 3000, 5000)) * 10_000 * 100
        road = g.rng.choice(
            ("湖滨南路", "嘉禾路", "仙岳路", "建设路", "人民路", "解放路", "中山路")
        )
        address = f"{e.region.place}{road}{g.rng.randint(1, 999)}号"
        g.add(
            "market",
            "enterprise",
            (
                e.uscc,
                e.name,
                legal_rep,
                capital,
                e.established_on.isoformat(),
                status,
                address,
                e.industry.scope,
                f"{e.region.office}市场监督管理局",
                disputed,
            ),
        )

    def market_penalty(
        self, e: _Enterprise, *, end: dt.date | str | None = "random", disputed: int | None = None
    ) -> int:
        g = self.g
        decided = g.day(max(e.established_on, g.days_ago(4380, 4380)), g.today)
        performed = g.negative_end(decided, ongoing=0.1) if end == "random" else end
        rid = g.new_id("market", "penalty")
        violation, penalty, fine = g.rng.choice(
            (
                ("虚假宣传", "罚款", (10_000, 200_000)),
                ("无照经营", "警告", (0, 0)),
                ("销售不合格产品", "没收违法所得、罚款", (5_000, 100_000)),
                ("未按规定公示年度报告", "警告", (0, 0)),
                ("商标侵权", "罚款", (20_000, 500_000)),
            )
        )
        g.add(
            "market",
            "penalty",
            (
                rid,
                e.uscc,
                f"{e.region.office[:2]}市监罚〔{decided.year}〕{rid:04d}号",
                violation,
                penalty,
                g.fen(*fine) if fine[1] else None,
                decided.isoformat(),
                f"{e.region.office}市场监督管理局",
                _iso(performed) if not isinstance(performed, str) else None,
                g.disputed() if disputed is None else disputed,
            ),
        )
        return rid

    def abnormal(self, e: _Enterprise, *, removed: dt.date | str | None = "random") -> int:
        g = self.g
        listed = g.day(max(e.established_on, g.days_ago(3650, 3650)), g.today)
        out = g.negative_end(listed, ongoing=0.35) if removed == "random" else removed
        out = None if isinstance(out, str) else out
        rid = g.new_id("market", "abnormal")
        reason = g.rng.choice(
            (
                "未按规定报送年度报告",
                "通过登记的住所或者经营场所无法联系",
                "公示企业信息隐瞒真实情况、弄虚作假",
            )
        )
        g.add(
            "market",
            "abnormal_list",
            (
                rid,
                e.uscc,
                reason,
                listed.isoformat(),
                f"{e.region.office}市场监督管理局",
                _iso(out),
                "补报年度报告并公示" if out else None,
                g.disputed(),
            ),
        )
        return rid

    def annual_reports(self, e: _Enterprise) -> None:
        g = self.g
        first = max(e.established_on.year, g.today.year - 3)
        for year in range(first, g.today.year):
            assets = g.fen(500_000, 200_000_000)
            revenue = g.fen(100_000, 300_000_000)
            g.add(
                "market",
                "annual_report",
                (
                    e.uscc,
                    year,
                    g.rng.randint(3, 800),
                    assets,
                    assets * g.rng.randint(10, 90) // 100,
                    revenue,
                    revenue * g.rng.randint(-10, 25) // 100,
                ),
            )

    # tax
    def tax_ratings(self, e: _Enterprise, *, force: str | None = None) -> None:
        g = self.g
        for year in range(max(e.established_on.year + 1, g.today.year - 3), g.today.year):
            rating = force or g.rng.choices("ABMCD", weights=(25, 45, 15, 10, 5))[0]
            score = {"A": 92, "B": 80, "M": 72, "C": 55, "D": 30}[rating] + g.rng.randint(0, 7)
            g.add("tax", "credit_rating", (e.uscc, year, rating, score))
            if rating == "A":
                g.add("tax", "a_list", (e.uscc, year, f"{year + 1}-04-{g.rng.randint(10, 28)}"))
            g.add("tax", "tax_paid", (e.uscc, year, g.fen(5_000, 20_000_000)))

    def major_violation(self, e: _Enterprise, *, end: dt.date | str | None = "random") -> int:
        g = self.g
        decided = g.day(max(e.established_on, g.days_ago(4000, 4000)), g.today)
        concluded = g.negative_end(decided, ongoing=0.3) if end == "random" else end
        concluded = None if isinstance(concluded, str) else concluded
        rid = g.new_id("tax", "major_case")
        nature = g.rng.choice(("偷税", "逃避追缴欠税", "骗取出口退税", "虚开增值税专用发票"))
        amount = g.fen(1_000_000, 30_000_000)
        g.add(
            "tax",
            "major_case",
            (
                rid,
                e.uscc,
                f"{e.region.office[:2]}税稽〔{decided.year}〕{rid:03d}号",
                nature,
                amount,
                f"经检查，该单位{decided.year}年间存在{nature}行为，涉及税款{amount // 100}元。",
                decided.isoformat(),
                f"国家税务总局{e.region.office}税务局稽查局",
                _iso(concluded),
                g.disputed(),
            ),
        )
        return rid

    def tax_arrears(self, e: _Enterprise, *, end: dt.date | str | None = "random") -> int:
        g = self.g
        since = g.day(max(e.established_on, g.days_ago(3000, 3000)), g.today)
        settled = g.negative_end(since, ongoing=0.4) if end == "random" else end
        settled = None if isinstance(settled, str) else settled
        rid = g.new_id("tax", "arrears")
        tax_type = g.rng.choice(("增值税", "企业所得税", "城镇土地使用税", "房产税", "印花税"))
        g.add(
            "tax",
            "arrears",
            (
                rid,
                e.uscc,
                tax_type,
                g.fen(2_000, 3_000_000),
                since.isoformat(),
                _iso(settled),
                g.disputed(),
            ),
        )
        return rid

    # court
    def dishonest(
        self,
        party: str,
        court_region: _Region,
        *,
        end: dt.date | str | None = "random",
        disputed: int | None = None,
    ) -> int:
        g = self.g
        published = g.days_ago(30, 4000)
        removed = g.negative_end(published, ongoing=0.45) if end == "random" else end
        removed = None if isinstance(removed, str) else removed
        rid = g.new_id("court", "dishonest")
        court = f"{court_region.office}人民法院"
        g.add(
            "court",
            "dishonest",
            (
                rid,
                party,
                f"（{published.year}）{_court_code(court_region)}执{g.rng.randint(100, 9999)}号",
                court,
                f"（{published.year - 1}）{_court_code(court_region)}民初{rid % 9000 + 100}号",
                f"支付欠款{g.rng.randint(1, 500) * 1000}元及利息",
                g.rng.choice(("全部未履行", "部分未履行")),
                g.rng.choice(
                    (
                        "有履行能力而拒不履行生效法律文书确定义务",
                        "违反财产报告制度",
                        "违反限制消费令",
                        "以虚假诉讼、虚假仲裁或者以隐匿、转移财产等方法规避执行",
                    )
                ),
                published.isoformat(),
                _iso(removed),
                g.disputed() if disputed is None else disputed,
            ),
        )
        return rid

    def enforcement(self, party: str, court_region: _Region, *, secret: bool = False) -> int:
        g = self.g
        filed = g.days_ago(30, 4000)
        closed = g.negative_end(filed, ongoing=0.4)
        rid = g.new_id("court", "enforcement")
        g.add(
            "court",
            "enforcement",
            (
                rid,
                party,
                f"（{filed.year}）{_court_code(court_region)}执{g.rng.randint(100, 9999)}号",
                f"{court_region.office}人民法院",
                filed.isoformat(),
                g.fen(5_000, 5_000_000),
                "执行完毕" if closed else g.rng.choice(("执行中", "终结本次执行程序")),
                _iso(closed),
                "涉及国防科研生产任务，具体情况不予公开" if secret else None,
                g.disputed(),
            ),
        )
        return rid

    # pbccrc
    def enterprise_loans(self, e: _Enterprise, n: int) -> None:
        g = self.g
        for _ in range(n):
            issued = g.day(max(e.established_on, g.days_ago(2500, 2500)), g.today)
            principal = g.fen(100_000, 50_000_000)
            due = issued + dt.timedelta(days=g.rng.choice((365, 730, 1095, 1825)))
            balance = 0 if due < g.today else principal * g.rng.randint(10, 100) // 100
            g.add(
                "pbccrc",
                "ent_loan",
                (
                    g.new_id("pbccrc", "ent_loan"),
                    e.uscc,
                    g.rng.choice(_BANKS),
                    g.rng.choice(("流动资金贷款", "固定资产贷款", "银行承兑汇票", "贸易融资")),
                    principal,
                    balance,
                    issued.isoformat(),
                    due.isoformat(),
                    g.rng.choices(
                        ("正常", "关注", "次级", "可疑", "损失"), weights=(85, 8, 4, 2, 1)
                    )[0],
                ),
            )

    def guarantee(self, e: _Enterprise, debtor: str) -> None:
        g = self.g
        start = g.days_ago(30, 2000)
        g.add(
            "pbccrc",
            "guarantee",
            (
                g.new_id("pbccrc", "guarantee"),
                e.uscc,
                debtor,
                g.rng.choice(_BANKS),
                g.rng.choice(("连带责任保证", "一般保证", "抵押", "质押")),
                g.fen(100_000, 20_000_000),
                start.isoformat(),
                (start + dt.timedelta(days=g.rng.choice((365, 1095)))).isoformat(),
            ),
        )

    def person_loan(self, p: _Person) -> int:
        g = self.g
        issued = g.day(max(years_before(p.born, -18), g.days_ago(3650, 3650)), g.today)
        loan_type, lo, hi, years = g.rng.choice(
            (
                ("个人住房贷款", 300_000, 3_000_000, 30),
                ("个人消费贷款", 10_000, 300_000, 3),
                ("个人经营性贷款", 50_000, 1_000_000, 3),
                ("个人汽车贷款", 50_000, 400_000, 5),
            )
        )
        principal = g.fen(lo, hi)
        due = issued + dt.timedelta(days=365 * years)
        rid = g.new_id("pbccrc", "person_loan")
        settled = due < g.today
        g.add(
            "pbccrc",
            "person_loan",
            (
                rid,
                p.id_number,
                g.rng.choice(_BANKS),
                loan_type,
                principal,
                0 if settled else principal * g.rng.randint(5, 100) // 100,
                issued.isoformat(),
                due.isoformat(),
                "结清" if settled else "正常",
            ),
        )
        return rid

    def overdue(
        self,
        loan_id: int,
        *,
        since: dt.date | None = None,
        end: dt.date | str | None = "random",
        disputed: int | None = None,
    ) -> int:
        g = self.g
        since = since or g.days_ago(60, 4000)
        repaid = g.negative_end(since, ongoing=0.2) if end == "random" else end
        repaid = None if isinstance(repaid, str) else repaid
        rid = g.new_id("pbccrc", "overdue")
        months = (
            max(1, ((repaid or g.today) - since).days // 30) if repaid else g.rng.randint(1, 24)
        )
        g.add(
            "pbccrc",
            "overdue",
            (
                rid,
                loan_id,
                since.isoformat(),
                min(months, 36),
                g.fen(500, 80_000),
                _iso(repaid),
                g.disputed() if disputed is None else disputed,
            ),
        )
        return rid

    # food and drug
    def licence(self, e: _Enterprise) -> None:
        g = self.g
        assert e.industry.licence is not None
        issued = g.day(max(e.established_on, g.days_ago(2000, 2000)), g.today)
        valid = issued + dt.timedelta(days=365 * 5)
        prefix = {"食品生产许可证": "SC", "食品经营许可证": "JY", "药品经营许可证": "AA"}
        g.add(
            "food_drug",
            "licence",
            (
                g.new_id("food_drug", "licence"),
                e.uscc,
                f"{prefix[e.industry.licence]}{e.region.code}{g.rng.randrange(10**7):07d}",
                e.industry.licence,
                issued.isoformat(),
                valid.isoformat(),
                "有效" if valid >= g.today else "已过期",
            ),
        )

    def food_drug_penalty(self, e: _Enterprise, *, end: dt.date | str | None = "random") -> int:
        g = self.g
        decided = g.day(max(e.established_on, g.days_ago(4000, 4000)), g.today)
        corrected = g.negative_end(decided, ongoing=0.1) if end == "random" else end
        corrected = None if isinstance(corrected, str) else corrected
        rid = g.new_id("food_drug", "penalty")
        violation = g.rng.choice(
            (
                "经营超过保质期的食品",
                "未按规定查验供货者许可证",
                "销售劣药",
                "从业人员未取得健康证明从事接触直接入口食品的工作",
            )
        )
        g.add(
            "food_drug",
            "penalty",
            (
                rid,
                e.uscc,
                f"{e.region.office[:2]}食药监罚〔{decided.year}〕{rid:03d}号",
                violation,
                g.rng.choice(("警告", "罚款", "没收违法所得、罚款", "责令停产停业")),
                g.fen(2_000, 200_000),
                decided.isoformat(),
                _iso(corrected),
                g.disputed(),
            ),
        )
        return rid

    # agriculture
    def household(self, p: _Person, village_code: str) -> None:
        g = self.g
        rated = g.days_ago(30, 1000)
        rating = g.rng.choices(("AAA", "AA", "A", "未评定"), weights=(20, 40, 30, 10))[0]
        line = {"AAA": 300_000, "AA": 150_000, "A": 50_000, "未评定": 0}[rating] * 100
        g.add(
            "agriculture",
            "household",
            (
                p.id_number,
                village_code,
                rating,
                rated.isoformat(),
                years_before(rated, -3).isoformat(),
                line,
            ),
        )

    # hrss
    def wage_blacklist(
        self, subject: str, region: _Region, *, end: dt.date | str | None = "random"
    ) -> int:
        g = self.g
        listed = g.days_ago(30, 3000)
        removed = g.negative_end(listed, ongoing=0.5) if end == "random" else end
        removed = None if isinstance(removed, str) else removed
        rid = g.new_id("hrss", "wage_blacklist")
        workers = g.rng.randint(5, 200)
        amount = g.fen(50_000, 5_000_000)
        g.add(
            "hrss",
            "wage_blacklist",
            (
                rid,
                subject,
                workers,
                amount,
                f"拖欠{workers}名农民工工资共计{amount // 100}元，经责令限期支付仍未支付",
                listed.isoformat(),
                _iso(removed),
                f"{region.office}人力资源和社会保障局",
                g.disputed(),
            ),
        )
        return rid

    def ss_arrears(self, e: _Enterprise, *, end: dt.date | str | None = "random") -> int:
        g = self.g
        since = g.day(max(e.established_on, g.days_ago(3000, 3000)), g.today)
        settled = g.negative_end(since, ongoing=0.4) if end == "random" else end
        settled = None if isinstance(settled, str) else settled
        rid = g.new_id("hrss", "ss_arrears")
        months = g.rng.randint(1, 18)
        g.add(
            "hrss",
            "ss_arrears",
            (
                rid,
                e.uscc,
                months,
                g.fen(3_000, 400_000),
                since.isoformat(),
                _iso(settled),
                g.disputed(),
            ),
        )
        return rid

    def insured(self, p: _Person, employer: str, *, diagnoses: str | None = None) -> None:
        g = self.g
        latest = g.today - dt.timedelta(days=60)
        first = min(years_before(p.born, -20), latest)
        since = g.day(first, max(first, min(latest, years_before(p.born, -45))))
        g.add(
            "hrss",
            "insured",
            (
                p.id_number,
                employer,
                since.isoformat(),
                g.fen(3_500, 30_000),
                max(1, (g.today - since).days // 30 - g.rng.randint(0, 24)),
                g.rng.choices(("正常参保", "暂停缴费", "中断"), weights=(85, 10, 5))[0],
                diagnoses,
            ),
        )

    def income(self, p: _Person, employer: str) -> None:
        g = self.g
        base = g.rng.randint(40_000, 400_000)
        for year in range(g.today.year - 3, g.today.year):
            base = base * g.rng.randint(95, 112) // 100
            g.add("hrss", "wage_income", (p.id_number, year, employer, base * 100))


# --- the whole population -------------------------------------------------------


def generate(
    out_dir: Path | str,
    *,
    seed: int = 1,
    subjects: int = 10_000,
    reference_date: dt.date = REFERENCE_DATE,
) -> Summary:
    """Write ``<department>.sqlite`` for every sample department and
    ``subjects.json`` into ``out_dir`` (created if missing; existing
    databases are replaced). Deterministic from ``seed``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = _Generator(seed, reference_date)
    r = _Records(g)
    notable = _showcase(g, r)
    n_showcase = sum(1 for n in notable if n.known_by)
    remaining = max(0, subjects - n_showcase)
    # A mix: a little more than half are enterprises.
    n_ent = remaining * 55 // 100
    persons = [g.person() for _ in range(remaining - n_ent)]
    rng = g.rng
    for _ in range(n_ent):
        e = g.enterprise()
        rep = rng.choice(persons).name if persons else g.person_name(True)
        _populate_enterprise(g, r, e, rep, persons)
    villages = _villages(g)
    for p in persons:
        _populate_person(g, r, p, villages)
    rows = {dept: _write_db(out, dept, g.rows[dept]) for dept in DEPARTMENTS}
    subjects_file = out / "subjects.json"
    doc = {
        "format": 1,
        "seed": seed,
        "reference_date": reference_date.isoformat(),
        "five_year_boundary": g.boundary.isoformat(),
        "subjects_total": n_showcase + remaining,
        "enterprises": n_ent + sum(1 for n in notable if n.type == "enterprise" and n.known_by),
        "persons": len(persons) + sum(1 for n in notable if n.type == "person" and n.known_by),
        "databases": {dept: f"{dept}.sqlite" for dept in DEPARTMENTS},
        "subjects": {
            n.key: {
                "type": n.type,
                "id": n.id,
                "name": n.name,
                "description": n.description,
                "known_by": n.known_by,
                "records": n.records,
            }
            for n in notable
        },
    }
    subjects_file.write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return Summary(
        out_dir=out,
        enterprises=doc["enterprises"],  # type: ignore[arg-type]
        persons=doc["persons"],  # type: ignore[arg-type]
        rows=rows,
        subjects_file=subjects_file,
    )


def _populate_enterprise(
    g: _Generator, r: _Records, e: _Enterprise, rep: str, persons: Sequence[_Person]
) -> None:
    rng = g.rng
    r.registration(e, rep, disputed=1 if rng.random() < 0.005 else 0)
    r.annual_reports(e)
    r.tax_ratings(e)
    if rng.random() < 0.15:
        for _ in range(rng.randint(1, 3)):
            r.market_penalty(e)
    if rng.random() < 0.08:
        r.abnormal(e)
    if rng.random() < 0.02:
        r.major_violation(e)
    if rng.random() < 0.05:
        r.tax_arrears(e)
    if rng.random() < 0.04:
        r.dishonest(e.uscc, e.region)
    if rng.random() < 0.08:
        r.enforcement(e.uscc, e.region, secret=rng.random() < 0.02)
    if rng.random() < 0.4:
        r.enterprise_loans(e, rng.randint(1, 3))
    if rng.random() < 0.1:
        r.guarantee(e, g.company_name(g.region(), rng.choice(_INDUSTRIES)))
    if e.industry.licence is not None:
        r.licence(e)
        if rng.random() < 0.15:
            r.food_drug_penalty(e)
    if rng.random() < 0.02:
        r.wage_blacklist(e.uscc, e.region)
    if rng.random() < 0.04:
        r.ss_arrears(e)


def _villages(g: _Generator) -> dict[str, list[tuple[str, str]]]:
    """region code -> [(village code, name)]; villages also go into the agriculture db."""
    out: dict[str, list[tuple[str, str]]] = {}
    for region in _REGIONS:
        if not region.rural:
            continue
        for i, name in enumerate(_VILLAGES):
            code = f"{region.code}{i + 101:03d}{200 + i:03d}"  # 12-digit village code
            full = f"{region.place}{name}村"
            g.add("agriculture", "village", (code, full, 1 if g.rng.random() < 0.4 else 0))
            out.setdefault(region.code, []).append((code, full))
    return out


def _populate_person(
    g: _Generator, r: _Records, p: _Person, villages: dict[str, list[tuple[str, str]]]
) -> None:
    rng = g.rng
    if rng.random() < 0.6:
        loans = [r.person_loan(p) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.12:
            r.overdue(rng.choice(loans))
    if rng.random() < 0.03:
        r.dishonest(p.id_number, p.region)
    if rng.random() < 0.04:
        r.enforcement(p.id_number, p.region)
    if rng.random() < 0.005:
        r.wage_blacklist(p.id_number, p.region)
    zihao = rng.choice(_ZIHAO_1) + rng.choice(_ZIHAO_2)
    employer = f"{p.region.short}{zihao}{rng.choice(_INDUSTRIES).name}有限公司"
    if rng.random() < 0.8:
        diagnoses = rng.choice(("高血压", "2型糖尿病", "慢性胃炎")) if rng.random() < 0.1 else None
        r.insured(p, employer, diagnoses=diagnoses)
        if rng.random() < 0.85:
            r.income(p, employer)
    if p.region.rural and rng.random() < 0.6:
        r.household(p, rng.choice(villages[p.region.code])[0])


def _showcase(g: _Generator, r: _Records) -> list[_Notable]:
    """Subjects with known, pinned properties, listed in subjects.json."""
    xiamen = _REGIONS[0]
    five = g.boundary
    day = dt.timedelta(days=1)
    food = next(i for i in _INDUSTRIES if i.name == "餐饮管理")

    # One enterprise every enterprise department knows, with negative records
    # on both sides of the five-year line and on it, and disputed ones.
    e = g.enterprise(xiamen, food)
    rep = g.person(_REGIONS[1])
    ent = _Notable(
        "enterprise_all_departments",
        "enterprise",
        e.uscc,
        e.name,
        "Known to every enterprise department; negative records aged out, on the "
        "five-year boundary, just inside it, ongoing, and disputed.",
        known_by=["court", "food_drug", "hrss", "market", "pbccrc", "tax"],
    )

    def note(
        dept: str, dataset: str, rid: int | str, end: dt.date | None, disputed: bool, why: str
    ) -> None:
        ent.records.append(
            {
                "department": dept,
                "dataset": dataset,
                "record_id": str(rid),
                "event_end_date": _iso(end) or "",
                "disputed": disputed,
                "note": why,
            }
        )

    r.registration(e, rep.name)
    r.annual_reports(e)
    r.tax_ratings(e, force="C")
    pen = "administrative_penalties"
    note(
        "market",
        pen,
        r.market_penalty(e, end=five - day, disputed=0),
        five - day,
        False,
        "ended one day more than five years before the reference date: aged out",
    )
    note(
        "market",
        pen,
        r.market_penalty(e, end=five, disputed=0),
        five,
        False,
        "ended exactly five years before the reference date: the boundary",
    )
    note(
        "market",
        pen,
        r.market_penalty(e, end=five + day, disputed=0),
        five + day,
        False,
        "ended one day less than five years before the reference date: still returned",
    )
    recent = g.today - dt.timedelta(days=200)
    note(
        "market",
        pen,
        r.market_penalty(e, end=recent, disputed=1),
        recent,
        True,
        "recent, with an objection pending: returned marked disputed",
    )
    note(
        "market",
        "abnormal_operations",
        r.abnormal(e, removed=None),
        None,
        False,
        "ongoing: still on the abnormal operations list",
    )
    old = years_before(g.today, 7)
    note(
        "tax",
        "major_violations",
        r.major_violation(e, end=old),
        old,
        False,
        "ended seven years before the reference date: aged out",
    )
    note("tax", "arrears", r.tax_arrears(e, end=None), None, False, "ongoing arrears")
    note(
        "court",
        "dishonest_debtors",
        r.dishonest(e.uscc, xiamen, end=None, disputed=1),
        None,
        True,
        "on the dishonest judgment debtor list, disputed",
    )
    r.enforcement(e.uscc, xiamen, secret=True)
    r.enterprise_loans(e, 2)
    r.guarantee(e, g.company_name(xiamen, _INDUSTRIES[1]))
    r.licence(e)
    note(
        "food_drug",
        "penalties",
        r.food_drug_penalty(e, end=recent),
        recent,
        False,
        "recent food safety penalty",
    )
    note(
        "hrss",
        "wage_arrears_blacklist",
        r.wage_blacklist(e.uscc, xiamen, end=None),
        None,
        False,
        "on the wage-arrears blacklist",
    )
    r.ss_arrears(e, end=None)

    # A clean enterprise: A-rated, registered, nothing negative.
    c = g.enterprise(xiamen, _INDUSTRIES[0])
    r.registration(c, g.person(_REGIONS[2]).name)
    r.annual_reports(c)
    r.tax_ratings(c, force="A")
    r.enterprise_loans(c, 1)
    clean = _Notable(
        "enterprise_clean",
        "enterprise",
        c.uscc,
        c.name,
        "Registered, tax A-list, one loan, nothing negative.",
        known_by=["market", "pbccrc", "tax"],
    )

    # A person with loans, overdue records (aged, boundary, disputed), social
    # security with a hospital diagnosis (prohibited), and income.
    p = g.person(_REGIONS[1])
    person = _Notable(
        "person_with_loans",
        "person",
        p.id_number,
        p.name,
        "Personal loans and overdue records (aged out, on the boundary, recent "
        "and disputed); social security with a prohibited medical history; income.",
        known_by=["hrss", "pbccrc"],
    )
    loans = [r.person_loan(p) for _ in range(3)]
    for rid, end, disputed, why in (
        (
            r.overdue(loans[0], since=years_before(g.today, 7), end=five - day, disputed=0),
            five - day,
            False,
            "repaid one day more than five years before the reference date: aged out",
        ),
        (
            r.overdue(loans[1], since=years_before(g.today, 6), end=five, disputed=0),
            five,
            False,
            "repaid exactly five years before the reference date: the boundary",
        ),
        (
            r.overdue(loans[2], since=g.today - dt.timedelta(days=120), end=None, disputed=1),
            None,
            True,
            "still overdue, disputed",
        ),
    ):
        person.records.append(
            {
                "department": "pbccrc",
                "dataset": "overdue_records",
                "record_id": str(rid),
                "event_end_date": _iso(end) or "",
                "disputed": disputed,
                "note": why,
            }
        )
    r.insured(p, e.name, diagnoses="2型糖尿病；高血压")
    r.income(p, e.name)

    # A rural household (信用户) in a credit village.
    q = g.person(_REGIONS[13])
    code = f"{q.region.code}999001"
    g.add("agriculture", "village", (code, f"{q.region.place}示范村", 1))
    r.household(q, code)
    r.person_loan(q)
    rural = _Notable(
        "person_rural_household",
        "person",
        q.id_number,
        q.name,
        "A rated rural household (信用户) in a credit village (信用村), with a loan.",
        known_by=["agriculture", "pbccrc"],
    )

    # A person on the dishonest judgment debtor and wage-arrears lists.
    d = g.person(_REGIONS[3])
    dishonest = _Notable(
        "person_dishonest_debtor",
        "person",
        d.id_number,
        d.name,
        "On the dishonest judgment debtor list and the wage-arrears blacklist.",
        known_by=["court", "hrss"],
    )
    dishonest.records.append(
        {
            "department": "court",
            "dataset": "dishonest_debtors",
            "record_id": str(r.dishonest(d.id_number, d.region, end=None, disputed=0)),
            "event_end_date": "",
            "disputed": False,
            "note": "ongoing",
        }
    )
    r.wage_blacklist(d.id_number, d.region, end=None)

    # Valid identifiers no department knows.
    ue = g.enterprise(xiamen)
    up = g.person(_REGIONS[1])
    unknown_e = _Notable(
        "enterprise_unknown",
        "enterprise",
        ue.uscc,
        ue.name,
        "A valid code no department knows: subject_known is false everywhere.",
    )
    unknown_p = _Notable(
        "person_unknown",
        "person",
        up.id_number,
        up.name,
        "A valid resident id no department knows.",
    )
    return [ent, clean, person, rural, dishonest, unknown_e, unknown_p]


def _write_db(out: Path, dept: str, tables: dict[str, list[tuple[Any, ...]]]) -> int:
    """Create ``<dept>.sqlite`` from the sample schema and bulk-load it in one transaction."""
    path = out / f"{dept}.sqlite"
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # A fresh file nobody else sees yet: skip the journal for speed.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.executescript(sample_schema(dept).read_text(encoding="utf-8"))
        conn.execute("BEGIN")
        total = 0
        for table, rows in tables.items():
            if not rows:
                continue
            marks = ", ".join("?" * len(rows[0]))
            conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
            total += len(rows)
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()
    return total
