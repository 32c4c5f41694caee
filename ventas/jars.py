"""The JVM pieces fetched once from Maven Central and cached under the user's home.

* The Kafka broker's classpath (kafka_2.13 + kafka-tools, version pinned in
  scripts/kafka-broker-pom.xml) is copied by Maven into ~/.cache/ventas/kafka-<version>/libs.
* The Spark Kafka connector and its runtime dependencies are resolved by Maven (pom in
  scripts/spark-kafka-connector-pom.xml) into ~/.m2/repository, where `spark-submit --packages`
  (Ivy) looks first, so the seed's own command then works with no other network access; the jars
  that pyspark does not already ship are copied into ~/.cache/ventas/spark-kafka-<scala>-<version>,
  which the project's own commands pass as `--jars` (no Ivy resolution, and no Ivy report, at
  every start). The coordinate follows the installed pyspark: Scala suffix and version.

Run `python -m ventas.jars` to fetch both; `--print-package` prints the connector coordinate,
`--print-jars` the comma-separated jar list for `spark-submit --jars`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ventas.config import Parser, UserError, fail

ROOT = Path(__file__).resolve().parent.parent
BROKER_POM = ROOT / "scripts" / "kafka-broker-pom.xml"
CONNECTOR_POM = ROOT / "scripts" / "spark-kafka-connector-pom.xml"
MAVEN_SETTINGS = ROOT / "scripts" / "maven-settings.xml"
CACHE_HOME = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ventas"
M2_REPOSITORY = Path.home() / ".m2" / "repository"


def kafka_version() -> str:
    """The Kafka version pinned in the broker pom (the one place it is written)."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", BROKER_POM.read_text())
    if not match:
        raise RuntimeError(f"no <kafka.version> in {BROKER_POM}")
    return match.group(1)


def kafka_libs_dir(version: str | None = None) -> Path:
    return CACHE_HOME / f"kafka-{version or kafka_version()}" / "libs"


def spark_scala_and_version() -> tuple[str, str]:
    """Scala binary version and Spark version of the installed pyspark (e.g. ('2.12', '3.5.7'))."""
    import pyspark

    # Under spark-submit pyspark is imported from SPARK_HOME's python/lib zip; the jars are in SPARK_HOME.
    jars = Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent) / "jars"
    core = next(jars.glob("spark-core_*.jar"), None)
    if core is None:
        raise UserError(f"no spark-core jar in {jars}: is pyspark installed correctly?")
    scala = core.name.removeprefix("spark-core_").split("-", 1)[0]
    return scala, pyspark.__version__


def spark_kafka_package() -> str:
    """The `--packages` coordinate of the Spark Kafka connector matching the installed pyspark."""
    scala, version = spark_scala_and_version()
    return f"org.apache.spark:spark-sql-kafka-0-10_{scala}:{version}"


def _maven(args: list[str], what: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise UserError(f"{what} is not cached and Maven (mvn) is not installed to fetch it: install Maven")
    # Spark's parent pom names a Google mirror of Central that may be unreachable: without settings of
    # the user's own, everything comes from Central itself.
    settings = [] if (Path.home() / ".m2" / "settings.xml").exists() else ["-s", str(MAVEN_SETTINGS)]
    result = subprocess.run([mvn, "-B", "-q", *settings, *args], capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line]
        detail = lines[0].strip() if lines else f"mvn exited {result.returncode}"
        raise UserError(f"{what} is not cached and Maven could not fetch it from Maven Central: {detail}")


def ensure_kafka_libs(version: str | None = None) -> Path:
    """The broker classpath directory of Kafka `version` (default: the pom's), fetched on first use."""
    version = version or kafka_version()
    libs = kafka_libs_dir(version)
    done = libs / ".complete"
    if not done.exists():
        staging = libs.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        _maven(
            [
                "-f",
                str(BROKER_POM),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-Dkafka.version={version}",
                f"-DoutputDirectory={staging}",
            ],
            f"Kafka {version} broker jars",
        )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        done.touch()
    return libs


def _ivy_missing_jars(package: str) -> list[str]:
    """Resolve `package` as `spark-submit --packages` does; the G:A:V whose jar Ivy could not get.

    Ivy takes the newest version of a module where Maven takes the nearest, so after Maven's
    resolution ~/.m2 can hold only the pom of the version Ivy wants (slf4j-api is the usual one).
    """
    import pyspark

    spark_submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    with tempfile.TemporaryDirectory() as tmp:
        noop = Path(tmp) / "noop.py"
        noop.write_text("")
        result = subprocess.run(
            [str(spark_submit), "--packages", package, str(noop)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYSPARK_PYTHON": sys.executable},
        )
    missing = re.findall(r"download failed: ([^#\s]+)#([^;\s]+);([^!\s]+)!", result.stderr + result.stdout)
    if result.returncode != 0 and not missing:
        raise UserError(f"spark-submit could not resolve {package}: {result.stderr.strip().splitlines()[-1:]}")
    return sorted({":".join(gav) for gav in missing})


def spark_kafka_jars_dir() -> Path:
    scala, version = spark_scala_and_version()
    return CACHE_HOME / f"spark-kafka-{scala}-{version}"


def _shipped_with_pyspark(artifact_id: str) -> bool:
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    return any(re.fullmatch(re.escape(artifact_id) + r"-\d.*\.jar", jar.name) for jar in jars.iterdir())


def ensure_spark_kafka_connector() -> str:
    """The connector coordinate, with everything `spark-submit --packages` needs in ~/.m2/repository
    and the jars pyspark lacks in spark_kafka_jars_dir()."""
    package = spark_kafka_package()
    scala, version = spark_scala_and_version()
    jars = spark_kafka_jars_dir()
    if not (jars / ".complete").exists():
        staging = jars.with_name(jars.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        _maven(
            [
                "-f",
                str(CONNECTOR_POM),
                f"-Dscala.binary.version={scala}",
                f"-Dspark.version={version}",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                "-Dmdep.useRepositoryLayout=true",
                f"-DoutputDirectory={staging}",
            ],
            f"Spark connector {package}",
        )
        for _ in range(10):  # the versions Ivy picks that Maven did not (see _ivy_missing_jars)
            missing = _ivy_missing_jars(package)
            if not missing:
                break
            for artifact in missing:
                _maven(["dependency:get", f"-Dartifact={artifact}", "-Dtransitive=false"], artifact)
        else:
            raise UserError(f"spark-submit still cannot resolve {package} from {M2_REPOSITORY}")
        shutil.rmtree(jars, ignore_errors=True)
        jars.mkdir(parents=True)
        for jar in staging.rglob("*.jar"):  # <group path>/<artifact>/<version>/<file>
            if not _shipped_with_pyspark(jar.parent.parent.name):
                jar.rename(jars / jar.name)
        shutil.rmtree(staging)
        (jars / ".complete").touch()
    return package


def spark_kafka_jars() -> list[Path]:
    """The connector's jars for `spark-submit --jars`, fetched on first use."""
    ensure_spark_kafka_connector()
    return sorted(spark_kafka_jars_dir().glob("*.jar"))


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="ventas.jars", description=__doc__.split("\n\n")[0])
    parser.add_argument("--print-package", action="store_true", help="print the connector coordinate only")
    parser.add_argument("--print-jars", action="store_true", help="print the connector's jars for --jars only")
    args = parser.parse_args(argv)
    try:
        if args.print_package:
            print(spark_kafka_package())
            return
        if args.print_jars:
            print(",".join(map(str, spark_kafka_jars())))
            return
        cached = all((d / ".complete").exists() for d in (kafka_libs_dir(), spark_kafka_jars_dir()))
        libs = ensure_kafka_libs()
        package = ensure_spark_kafka_connector()
    except UserError as error:
        fail(parser.prog, error)
    if not cached:  # say where the fetched jars went; quiet afterwards (`make demo` starts with the demo's lines)
        print(f"Kafka {kafka_version()} broker jars: {libs}", file=sys.stderr)
        print(f"Spark Kafka connector: {package} (in {M2_REPOSITORY}, {spark_kafka_jars_dir()})", file=sys.stderr)


if __name__ == "__main__":
    main()
