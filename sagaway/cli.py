import asyncio
import typer
from sagaway.migrate import migrate
from sagaway.settings import Settings
app = typer.Typer()
@app.command("migrate")
def migrate_cmd() -> None:
    asyncio.run(migrate(Settings()))
@app.command("x")
def x() -> None: ...
